"""Reads the downstream topics back as CloudEvents, for tests of exactly what was published."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from tests.support.topic import partition_count


@dataclass(frozen=True)
class Received:
    key: str
    type: str
    id: str
    sequence: int
    district_id: str
    data: dict[str, Any]
    attributes: dict[str, Any]
    partition: int
    offset: int


async def read_cloudevents(
    bootstrap: str, topic: str, district_id: str | None = None, timeout: float = 30.0
) -> list[Received]:
    """Every message on `topic` up to its current end (or a district's), parsed with the
    CloudEvents SDK from Kafka binary mode, in partition and offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[Received] = []
    try:
        partitions = [
            TopicPartition(topic, p) for p in range(await partition_count(bootstrap, topic))
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        async with asyncio.timeout(timeout):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for r in records:
                        event = from_binary(
                            KafkaMessage(dict(r.headers), r.key, r.value), JSONFormat()
                        )
                        attributes = event.get_attributes()
                        if district_id is not None and attributes["districtid"] != district_id:
                            continue
                        data = event.get_data()
                        assert isinstance(data, dict)
                        found.append(
                            Received(
                                r.key.decode(),
                                event.get_type(),
                                event.get_id(),
                                int(attributes["sequence"]),
                                attributes["districtid"],
                                data,
                                attributes,
                                tp.partition,
                                r.offset,
                            )
                        )
    finally:
        await consumer.stop()
    found.sort(key=lambda m: (m.partition, m.offset))
    return found
