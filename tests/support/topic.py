"""Reads what is on a topic, for tests that check exactly what was published."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas import kafka_headers as h


@dataclass(frozen=True)
class Published:
    event_id: str
    key: bytes
    value: bytes
    headers: dict[str, str]
    partition: int


async def partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        await admin.close()


async def read_records(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record on `topic` up to its current end, in partition and offset order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    found: list[Any] = []
    try:
        partitions = [
            TopicPartition(topic, p) for p in range(await partition_count(bootstrap, topic))
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        async with asyncio.timeout(timeout):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found.extend(records)
    finally:
        await consumer.stop()
    found.sort(key=lambda r: (r.partition, r.offset))
    return found


async def read_topic(
    bootstrap: str, topic: str, event_ids: set[str] | None = None, timeout: float = 20.0
) -> list[Published]:
    """Every record on `topic` (up to its current end), or those whose event id is given."""
    found: list[Published] = []
    for record in await read_records(bootstrap, topic, timeout):
        headers = h.header_map(record.headers)
        eid = headers.get(h.EVENT_ID, "")
        if event_ids is None or eid in event_ids:
            found.append(Published(eid, record.key, record.value, headers, record.partition))
    return found
