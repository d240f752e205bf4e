"""How topics are asked for (replication, min.insync.replicas) and how an existing topic is judged
against what is wanted: pure rules, the broker's side is in tests/integration/test_topics.py."""

from __future__ import annotations

from service.kafka.config import topic_durability
from service.kafka.topics import (
    ClusterDefaults,
    Durability,
    TopicSpec,
    TopicState,
    new_topics,
    shortfalls,
)
from service.settings import Settings

SPEC = TopicSpec("t", 12, {"retention.ms": "1000"})
CLUSTER = ClusterDefaults(replication_factor=3, min_insync_replicas=2)


def test_unset_settings_take_the_cluster_defaults() -> None:
    unset = Settings(kafka_replication_factor=None, kafka_min_insync_replicas=None)
    (topic,) = new_topics([SPEC], topic_durability(unset), CLUSTER)
    assert (topic.name, topic.num_partitions, topic.replication_factor) == ("t", 12, 3)
    # No override: the topic follows the cluster's min.insync.replicas, even if it changes.
    assert topic.topic_configs == {"retention.ms": "1000"}


def test_settings_override_the_cluster_defaults() -> None:
    settings = Settings(kafka_replication_factor=5, kafka_min_insync_replicas=3)
    (topic,) = new_topics([SPEC], topic_durability(settings), CLUSTER)
    assert topic.replication_factor == 5
    assert topic.topic_configs == {"retention.ms": "1000", "min.insync.replicas": "3"}


def test_a_topic_as_wanted_falls_short_in_nothing() -> None:
    state = TopicState(partitions=12, replication_factor=3, min_insync_replicas=2)
    assert shortfalls(SPEC, state, Durability(), CLUSTER) == []


def test_each_shortfall_is_named() -> None:
    state = TopicState(partitions=6, replication_factor=1, min_insync_replicas=1)
    assert shortfalls(SPEC, state, Durability(), CLUSTER) == [
        "6 partitions, fewer than the 12 specified",
        "replication factor 1, below the wanted 3",
        "min.insync.replicas 1, below the wanted 2: an acknowledged send may be held by fewer"
        " copies",
    ]


def test_settings_are_what_is_wanted_when_given() -> None:
    state = TopicState(partitions=12, replication_factor=3, min_insync_replicas=2)
    wanted = Durability(replication_factor=5, min_insync_replicas=3)
    assert shortfalls(SPEC, state, wanted, CLUSTER) == [
        "replication factor 3, below the wanted 5",
        "min.insync.replicas 2, below the wanted 3: an acknowledged send may be held by fewer"
        " copies",
    ]


def test_more_insync_replicas_than_copies_is_named() -> None:
    state = TopicState(partitions=12, replication_factor=1, min_insync_replicas=2)
    found = shortfalls(SPEC, state, Durability(), ClusterDefaults(1, 1))
    assert found == [
        "min.insync.replicas 2 above its replication factor 1: no acks=all send can succeed"
    ]
