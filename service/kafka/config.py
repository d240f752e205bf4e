"""How every process reaches Kafka, and the producer settings all producers share."""

from __future__ import annotations

from typing import Any

from schemas.clever import MAX_EVENT_BYTES
from service.settings import Settings

# The largest record any producer sends, any topic takes (`max.message.bytes`) and any consumer
# fetches: the largest event the doors accept, with its key and headers (a dead letter adds its
# error), or the `roster.changes.v1` message of the largest section (its ids as compact as the
# event's: the outbox stores orjson's output). A MiB of headroom covers those additions.
MAX_RECORD_BYTES = MAX_EVENT_BYTES + 1024 * 1024


def bootstrap_servers(settings: Settings) -> str:
    """`ROSTER_KAFKA_BOOTSTRAP_SERVERS`, else the project's local broker on loopback."""
    return settings.kafka_bootstrap_servers or f"127.0.0.1:{settings.local_kafka_port}"


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
