"""`roster_consumer_lag` reports only the partitions this consumer holds: a revoked partition's
series goes (its new owner reports it), so a last figure never lingers on a process's /metrics."""

from __future__ import annotations

from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import create_async_engine

from consumers.metrics import LAG
from consumers.runner import ConsumerRunner, _CommitOnRevoke


def _lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "roster_consumer_lag", {"topic": topic, "partition": str(partition)}
    )


async def test_a_revoked_partition_leaves_the_lag_gauge_and_the_others_stay() -> None:
    # A consumer never started and an engine never connected: a revocation with nothing in
    # flight and nothing processed touches neither.
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    runner: ConsumerRunner[Any] = ConsumerRunner(
        consumer, engine, cast(Any, None), topics=["lag-test"], max_batch=1
    )
    LAG.labels("lag-test", "0").set(50_000)
    LAG.labels("lag-test", "1").set(7)
    try:
        await _CommitOnRevoke(runner).on_partitions_revoked([TopicPartition("lag-test", 0)])
    finally:
        await consumer.stop()
        await engine.dispose()

    assert _lag("lag-test", 0) is None
    assert _lag("lag-test", 1) == 7
