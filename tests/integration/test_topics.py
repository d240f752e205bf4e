"""Topic durability on the real broker: unset settings take the cluster's defaults, settings are
applied to new topics, and an existing topic that falls short is reported, never altered."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from service.kafka.topics import Durability, TopicSpec, cluster_defaults, ensure_topics
from tests.support.services import Services

_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source of a topic's own override


@pytest.fixture
async def admin(services: Services) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await client.start()
    yield client
    await client.close()


async def _described(admin: AIOKafkaAdminClient, topic: str) -> tuple[int, int, str, bool]:
    """Partitions, replication factor, min.insync.replicas, and whether that is the topic's own."""
    (metadata,) = await admin.describe_topics([topic])
    (response,) = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
    )
    (resource,) = response.to_object()["resources"]
    (entry,) = resource["config_entries"]
    own = (
        entry["config_source"] == _DYNAMIC_TOPIC_CONFIG
        if "config_source" in entry
        else not entry["is_default"]
    )
    partitions = metadata["partitions"]
    replicas = min(len(p["replicas"]) for p in partitions)
    return len(partitions), replicas, entry["config_value"], own


def _problems(caplog: pytest.LogCaptureFixture, topic: str) -> list[str]:
    return [
        str(getattr(r, "problem", ""))
        for r in caplog.records
        if r.name == "service.kafka.topics" and getattr(r, "topic", None) == topic
    ]


async def test_unset_settings_take_the_cluster_defaults(
    services: Services, admin: AIOKafkaAdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"test.durability.{uuid.uuid4().hex[:8]}"
    cluster = await cluster_defaults(admin)
    await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 3),), Durability())
    partitions, replicas, insync, own = await _described(admin, topic)
    assert (partitions, replicas) == (3, cluster.replication_factor)
    assert (insync, own) == (str(cluster.min_insync_replicas), False)  # follows the cluster's
    with caplog.at_level(logging.WARNING):
        await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 3),), Durability())
    assert _problems(caplog, topic) == []  # as wanted: nothing to report


async def test_settings_are_applied_to_a_new_topic(
    services: Services, admin: AIOKafkaAdminClient
) -> None:
    topic = f"test.durability.{uuid.uuid4().hex[:8]}"
    wanted = Durability(replication_factor=1, min_insync_replicas=1)
    await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 2),), wanted)
    assert await _described(admin, topic) == (2, 1, "1", True)


async def test_an_existing_topic_that_falls_short_is_reported_and_left_alone(
    services: Services, admin: AIOKafkaAdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"test.durability.{uuid.uuid4().hex[:8]}"
    response = await admin.create_topics([NewTopic(topic, 2, 1)])  # made by someone else
    assert response.topic_errors[0][1] == 0
    wanted = Durability(replication_factor=2, min_insync_replicas=2)
    with caplog.at_level(logging.WARNING):
        await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 3),), wanted)
    assert _problems(caplog, topic) == [
        "2 partitions, fewer than the 3 specified",
        "replication factor 1, below the wanted 2",
        "min.insync.replicas 1, below the wanted 2: an acknowledged send may be held by fewer"
        " copies",
    ]
    assert await _described(admin, topic) == (2, 1, "1", False)  # not altered
