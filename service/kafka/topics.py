"""The topics the service owns, created idempotently at start by every process that uses them.

Durability: with `acks=all` an acknowledged send is held by `min.insync.replicas` copies, so the
topics are created with `ROSTER_KAFKA_REPLICATION_FACTOR` and `ROSTER_KAFKA_MIN_INSYNC_REPLICAS`,
or, unset, with the cluster's own defaults (`default.replication.factor` read from a broker, and no
`min.insync.replicas` override so the topic follows the cluster's value). A topic that already
exists keeps its replication: each way it falls short of what is wanted is logged as a warning.
Only its `max.message.bytes` is raised when too low (see `_raise_record_limits`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.topics import (
    ALERTS_TOPIC,
    CHANGES_TOPIC,
    CLEVER_EVENTS_DLQ_TOPIC,
    CLEVER_EVENTS_TOPIC,
)
from service.kafka.limits import MAX_RECORD_BYTES

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_MIN_INSYNC = "min.insync.replicas"
_DEFAULT_REPLICATION = "default.replication.factor"
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
    CLEVER_EVENTS_TOPIC, 12, {"retention.ms": str(35 * 24 * 3600 * 1000), **_RECORDS}
)

# Events the consumer could not apply, with the error in headers (keyed by district, like the
# inbound topic). Kept long: a person looks at them and re-drives them once the cause is fixed.
CLEVER_EVENTS_DLQ = TopicSpec(
    CLEVER_EVENTS_DLQ_TOPIC, 3, {"retention.ms": str(90 * 24 * 3600 * 1000), **_RECORDS}
)

# Downstream topics (CloudEvents, Kafka binary mode), relayed from the outbox. Keyed by entity
# (changes) and by student (alerts), so each key's messages stay in order on one partition.
ROSTER_CHANGES = TopicSpec(
    CHANGES_TOPIC, 12, {"retention.ms": str(35 * 24 * 3600 * 1000), **_RECORDS}
)
ROSTER_ALERTS = TopicSpec(ALERTS_TOPIC, 3, {"retention.ms": str(90 * 24 * 3600 * 1000), **_RECORDS})

ALL_TOPICS: tuple[TopicSpec, ...] = (
    CLEVER_EVENTS,
    CLEVER_EVENTS_DLQ,
    ROSTER_CHANGES,
    ROSTER_ALERTS,
)


class TopicError(RuntimeError):
    pass


@dataclass(frozen=True)
class Durability:
    """The copies wanted of each topic's data; None leaves the choice to the cluster."""

    replication_factor: int | None = None
    min_insync_replicas: int | None = None


@dataclass(frozen=True)
class ClusterDefaults:
    """What a broker applies to a topic that does not say: `default.replication.factor` and
    `min.insync.replicas`."""

    replication_factor: int
    min_insync_replicas: int


@dataclass(frozen=True)
class TopicState:
    """An existing topic as the cluster describes it."""

    partitions: int
    replication_factor: int  # the fewest replicas of any of its partitions
    min_insync_replicas: int


def new_topics(
    topics: Sequence[TopicSpec], durability: Durability, cluster: ClusterDefaults
) -> list[NewTopic]:
    """The creation requests. An unset replication factor is the cluster's default, sent as a
    number: CreateTopics takes -1 ("the broker's default") only from version 4, and the client
    speaks versions 0 to 3. An unset `min.insync.replicas` is no override at all."""
    replication = durability.replication_factor or cluster.replication_factor
    insync = (
        {}
        if durability.min_insync_replicas is None
        else {_MIN_INSYNC: str(durability.min_insync_replicas)}
    )
    return [
        NewTopic(t.name, t.partitions, replication, topic_configs={**t.config, **insync})
        for t in topics
    ]


def shortfalls(
    spec: TopicSpec, state: TopicState, durability: Durability, cluster: ClusterDefaults
) -> list[str]:
    """Each way an existing topic is weaker than wanted, in a sentence (pure)."""
    wanted_replicas = durability.replication_factor or cluster.replication_factor
    wanted_insync = durability.min_insync_replicas or cluster.min_insync_replicas
    found = []
    if state.partitions < spec.partitions:
        found.append(f"{state.partitions} partitions, fewer than the {spec.partitions} specified")
    if state.replication_factor < wanted_replicas:
        found.append(
            f"replication factor {state.replication_factor}, below the wanted {wanted_replicas}"
        )
    if state.min_insync_replicas < wanted_insync:
        found.append(
            f"min.insync.replicas {state.min_insync_replicas}, below the wanted {wanted_insync}: "
            "an acknowledged send may be held by fewer copies"
        )
    if state.min_insync_replicas > state.replication_factor:
        found.append(
            f"min.insync.replicas {state.min_insync_replicas} above its replication factor "
            f"{state.replication_factor}: no acks=all send can succeed"
        )
    return found


def _configs(responses: list[Any]) -> dict[str, dict[str, str]]:
    """Config values per resource name from DescribeConfigs responses."""
    values: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                raise TopicError(
                    f"describing the configuration of {resource['resource_name']} failed with "
                    f"Kafka error code {resource['error_code']}"
                )
            values[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
            }
    return values


async def cluster_defaults(admin: AIOKafkaAdminClient) -> ClusterDefaults:
    """The defaults of one broker of the cluster (they are set alike on every broker)."""
    brokers = (await admin.describe_cluster())["brokers"]
    if not brokers:
        raise TopicError("the cluster named no broker")
    broker = str(brokers[0]["node_id"])
    wanted = {_DEFAULT_REPLICATION: None, _MIN_INSYNC: None}
    configs = _configs(
        await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker, wanted)])
    )[broker]
    return ClusterDefaults(int(configs[_DEFAULT_REPLICATION]), int(configs[_MIN_INSYNC]))


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, TopicState]:
    metadata = {t["topic"]: t["partitions"] for t in await admin.describe_topics(names)}
    configs = _configs(
        await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, {_MIN_INSYNC: None}) for name in names]
        )
    )
    return {
        name: TopicState(
            partitions=len(partitions),
            replication_factor=min((len(p["replicas"]) for p in partitions), default=0),
            min_insync_replicas=int(configs[name][_MIN_INSYNC]),
        )
        for name, partitions in metadata.items()
        if name in configs
    }


async def ensure_topics(
    bootstrap_servers: str,
    topics: tuple[TopicSpec, ...] = ALL_TOPICS,
    durability: Durability = Durability(),
) -> None:
    """Creates missing topics. An existing topic keeps its partitions and its durability (a
    warning for each way it falls short of `durability` or of its specified partitions) and its
    settings, except a `max.message.bytes` below the spec's, which is raised."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        cluster = await cluster_defaults(admin)
        response = await admin.create_topics(new_topics(topics, durability, cluster))
        existing = []
        for error in response.topic_errors:
            name, code = error[0], error[1]
            if code == _TOPIC_ALREADY_EXISTS:
                existing.append(name)
            elif code != 0:
                raise TopicError(f"creating topic {name} failed with Kafka error code {code}")
        # Only a topic that was there before can fall short (created by someone else, or before
        # the settings changed); a topic just created may not show all its partitions yet.
        if existing:
            states = await _describe(admin, existing)
            for spec in topics:
                if spec.name not in states:
                    continue
                for problem in shortfalls(spec, states[spec.name], durability, cluster):
                    log.warning(
                        "existing topic falls short of the wanted settings",
                        extra={"topic": spec.name, "problem": problem},
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
