"""Keyed records through the real broker: partitions by key, a consumer group, committed offsets."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from service.kafka.config import producer_options
from service.kafka.topics import TopicSpec, ensure_topics
from tests.support.services import Services


async def _drain(
    consumer: AIOKafkaConsumer, want: int, timeout: float = 30.0
) -> list[tuple[str, str, int]]:
    seen: list[tuple[str, str, int]] = []
    async with asyncio.timeout(timeout):
        while len(seen) < want:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                seen.extend((r.key.decode(), r.value.decode(), tp.partition) for r in records)
    return seen


async def test_keyed_records_round_trip_with_committed_offsets(services: Services) -> None:
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 3),))
    await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 3),))  # idempotent
    group = f"g-{uuid.uuid4().hex[:8]}"

    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    await producer.start()
    try:
        sends = [
            await producer.send(
                topic, key=f"district-{i % 5}".encode(), value=f"event-{i}".encode()
            )
            for i in range(60)
        ]
        metadata = await asyncio.gather(*sends)
    finally:
        await producer.stop()
    assert all(m.offset >= 0 for m in metadata)

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=services.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        seen = await _drain(consumer, 60)
        await consumer.commit()
        committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        await consumer.stop()

    assert sorted(v for _, v, _ in seen) == sorted(f"event-{i}" for i in range(60))
    partitions_by_key: dict[str, set[int]] = defaultdict(set)
    for key, _, partition in seen:
        partitions_by_key[key].add(partition)
    assert all(len(parts) == 1 for parts in partitions_by_key.values())  # same key, same partition
    # Per key, order is kept.
    for key in partitions_by_key:
        values = [int(v.split("-")[1]) for k, v, _ in seen if k == key]
        assert values == sorted(values)
    per_partition: dict[int, int] = defaultdict(int)
    for _, _, partition in seen:
        per_partition[partition] += 1
    assert {p: committed[p] or 0 for p in range(3)} == {p: per_partition[p] for p in range(3)}

    # The same group starts after its committed offsets: nothing is read again.
    again = AIOKafkaConsumer(
        topic,
        bootstrap_servers=services.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await again.start()
    try:
        batch = await again.getmany(timeout_ms=1500)
    finally:
        await again.stop()
    assert sum(len(records) for records in batch.values()) == 0
