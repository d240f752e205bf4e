"""Kafka plumbing shared by the processes: topic specs, admin, producer and consumer factories."""
