"""The project's own real components for development and tests: a Kafka broker and PostgreSQL."""
