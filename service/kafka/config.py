"""How every process reaches Kafka, and the producer settings all producers share."""

from __future__ import annotations

from typing import Any

from service.kafka.limits import MAX_RECORD_BYTES
from service.kafka.topics import Durability
from service.settings import Settings, missing


def bootstrap_servers(settings: Settings) -> str:
    """`ROSTER_KAFKA_BOOTSTRAP_SERVERS`; unset, a `SettingsError` naming it (`roster dev` passes
    its local broker's address explicitly)."""
    if not settings.kafka_bootstrap_servers:
        raise missing("kafka_bootstrap_servers")
    return settings.kafka_bootstrap_servers


def topic_durability(settings: Settings) -> Durability:
    """`ROSTER_KAFKA_REPLICATION_FACTOR` and `ROSTER_KAFKA_MIN_INSYNC_REPLICAS` (unset: the
    cluster's defaults) for the topics a process creates."""
    return Durability(settings.kafka_replication_factor, settings.kafka_min_insync_replicas)


def producer_options(bootstrap: str) -> dict[str, Any]:
    """Idempotent, acks from every in-sync replica: a send acknowledged is durable and not doubled
    by the client's own retries. A short linger lets concurrent requests share a batch."""
    return {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,  # a larger record gets a batch of its own
        "max_request_size": MAX_RECORD_BYTES,
        "compression_type": None,
        "request_timeout_ms": 5_000,
        "retry_backoff_ms": 100,
    }
