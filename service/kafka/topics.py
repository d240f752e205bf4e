"""The topics the service owns, created idempotently at start by every process that uses them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.roster_changes import CHANGES_TOPIC
from service.kafka.config import MAX_RECORD_BYTES

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' source of a setting made for the topic itself
MAX_MESSAGE_BYTES = "max.message.bytes"
# Every topic takes the largest record a producer may send (a broker's default is 1 MiB).
_RECORDS = {MAX_MESSAGE_BYTES: str(MAX_RECORD_BYTES)}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


# Clever keeps events for 30 days; we keep the inbound topic a little longer so a replay from
# offset 0 covers everything Clever could still resend.
CLEVER_EVENTS = TopicSpec(
    "clever.events.v1", 12, {"retention.ms": str(35 * 24 * 3600 * 1000), **_RECORDS}
)

# Events the consumer could not apply, with the error in headers (keyed by district, like the
# inbound topic). Kept long: a person looks at them and re-drives them once the cause is fixed.
CLEVER_EVENTS_DLQ = TopicSpec(
    "clever.events.dlq.v1", 3, {"retention.ms": str(90 * 24 * 3600 * 1000), **_RECORDS}
)

# Downstream topics (CloudEvents, Kafka binary mode), relayed from the outbox. Keyed by entity
# (changes) and by student (alerts), so each key's messages stay in order on one partition.
ROSTER_CHANGES = TopicSpec(
    CHANGES_TOPIC, 12, {"retention.ms": str(35 * 24 * 3600 * 1000), **_RECORDS}
)
ROSTER_ALERTS = TopicSpec(
    "roster.alerts.v1", 3, {"retention.ms": str(90 * 24 * 3600 * 1000), **_RECORDS}
)

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
    """Creates missing topics. An existing topic keeps its partitions (a warning if it has fewer)
    and its settings, except a `max.message.bytes` below the spec's, which is raised."""
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
            await _raise_record_limits(admin, [t for t in topics if t.name in existing])
    finally:
        await admin.close()


async def _raise_record_limits(admin: AIOKafkaAdminClient, topics: list[TopicSpec]) -> None:
    """Raises the `max.message.bytes` of topics created with less (by an earlier version of the
    service, or by hand), so the records the producers may now send are not refused for ever.
    Raised at start-up rather than only warned about: the service owns these topics, and a higher
    limit takes nothing away. Never lowered. aiokafka offers only the non-incremental
    AlterConfigs, which replaces a topic's whole set of overrides, so the current ones are read
    and sent back with the new limit. Without the right to alter a topic, a warning says what to
    run."""
    wanted = {
        t.name: int(t.config[MAX_MESSAGE_BYTES]) for t in topics if MAX_MESSAGE_BYTES in t.config
    }
    if not wanted:
        return
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(wanted)]
    )
    changes = []
    for response in responses:
        for error_code, _, _, name, entries in response.resources:
            if error_code != 0 or name not in wanted:
                continue
            current = {entry[0]: entry for entry in entries}
            limit = current.get(MAX_MESSAGE_BYTES)
            if limit is None or int(limit[1]) >= wanted[name]:
                continue
            overrides = {
                key: entry[1]
                for key, entry in current.items()
                if _is_override(response.API_VERSION, entry) and entry[1] is not None
            }
            overrides[MAX_MESSAGE_BYTES] = str(wanted[name])
            changes.append((name, int(limit[1]), overrides))
    for name, before, overrides in changes:
        try:
            (response, *_) = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, overrides)]
            )
            error_code = response.resources[0][0]
        except Exception as exc:
            error_code = type(exc).__name__
        if error_code == 0:
            log.info(
                "topic max.message.bytes raised",
                extra={"topic": name, "from": before, "to": wanted[name]},
            )
            continue
        log.warning(
            "topic max.message.bytes is below the largest record the service sends; records "
            "above it are refused until it is raised",
            extra={
                "topic": name,
                "max_message_bytes": before,
                "needed": wanted[name],
                "error": error_code,
                "fix": f"kafka-configs.sh --alter --entity-type topics --entity-name {name} "
                f"--add-config {MAX_MESSAGE_BYTES}={wanted[name]}",
            },
        )


def _is_override(version: int, entry: Any) -> bool:
    """A setting made for the topic itself (v0 knows only "not a default")."""
    return bool(entry[3] == _DYNAMIC_TOPIC_CONFIG if version >= 1 else not entry[3])
