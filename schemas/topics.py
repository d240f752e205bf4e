"""The name of every Kafka topic the service reads or writes (wire contract): the one place that
spells them. What each topic carries is described by its own module (`schemas/clever.py` and
`schemas/kafka_headers.py` for the inbound topic, `schemas/roster_changes.py`,
`schemas/roster_alerts.py`); how each is created (partitions, retention) by
`service/kafka/topics.py`."""

from __future__ import annotations

# Clever events as the doors received them, keyed by district.
CLEVER_EVENTS_TOPIC = "clever.events.v1"
# Events the consumer could not apply, with the error in headers.
CLEVER_EVENTS_DLQ_TOPIC = "clever.events.dlq.v1"
# Downstream: roster changes, and the single-school rule's alerts (CloudEvents).
CHANGES_TOPIC = "roster.changes.v1"
ALERTS_TOPIC = "roster.alerts.v1"
