"""The topics the service owns, created idempotently at start by every process that uses them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas.roster_changes import CHANGES_TOPIC

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


# Clever keeps events for 30 days; we keep the inbound topic a little longer so a replay from
# offset 0 covers everything Clever could still resend.
CLEVER_EVENTS = TopicSpec("clever.events.v1", 12, {"retention.ms": str(35 * 24 * 3600 * 1000)})

# Events the consumer could not apply, with the error in headers (keyed by district, like the
# inbound topic). Kept long: a person looks at them and re-drives them once the cause is fixed.
CLEVER_EVENTS_DLQ = TopicSpec(
    "clever.events.dlq.v1", 3, {"retention.ms": str(90 * 24 * 3600 * 1000)}
)

# Downstream topics (CloudEvents, Kafka binary mode), relayed from the outbox. Keyed by entity
# (changes) and by student (alerts), so each key's messages stay in order on one partition.
ROSTER_CHANGES = TopicSpec(CHANGES_TOPIC, 12, {"retention.ms": str(35 * 24 * 3600 * 1000)})
ROSTER_ALERTS = TopicSpec("roster.alerts.v1", 3, {"retention.ms": str(90 * 24 * 3600 * 1000)})

ALL_TOPICS: tuple[TopicSpec, ...] = (
    CLEVER_EVENTS,
    CLEVER_EVENTS_DLQ,
    ROSTER_CHANGES,
    ROSTER_ALERTS,
)


class TopicError(RuntimeError):
    pass


async def ensure_topics(
    bootstrap_servers: str,
    topics: tuple[TopicSpec, ...] = ALL_TOPICS,
    *,
    replication_factor: int = 1,
) -> None:
    """Creates missing topics; an existing topic is left as it is (a warning if it is smaller)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(t.name, t.partitions, replication_factor, topic_configs=t.config)
                for t in topics
            ]
        )
        existing = []
        for error in response.topic_errors:
            name, code = error[0], error[1]
            if code == _TOPIC_ALREADY_EXISTS:
                existing.append(name)
            elif code != 0:
                raise TopicError(f"creating topic {name} failed with Kafka error code {code}")
        # Only a topic that was there before can be smaller than specified (created by someone
        # else); a topic just created may not show all its partitions in metadata yet.
        if existing:
            described = {
                t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(existing)
            }
            for spec in topics:
                if spec.name in described and described[spec.name] < spec.partitions:
                    log.warning(
                        "topic has fewer partitions than specified",
                        extra={
                            "topic": spec.name,
                            "partitions": described[spec.name],
                            "expected": spec.partitions,
                        },
                    )
    finally:
        await admin.close()
