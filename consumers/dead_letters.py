"""The dead-letter topic: events the consumer could not apply, with the error in headers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from aiokafka import AIOKafkaProducer

from consumers.metrics import DEAD_LETTERED
from consumers.records import Poison
from schemas import kafka_headers as h
from service.kafka.topics import CLEVER_EVENTS_DLQ


class DeadLetters(Protocol):
    async def send(self, poison: Sequence[Poison]) -> None:
        """Publishes `poison` and returns once Kafka has acknowledged every record."""


class KafkaDeadLetters:
    def __init__(self, producer: AIOKafkaProducer, topic: str = CLEVER_EVENTS_DLQ.name) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, poison: Sequence[Poison]) -> None:
        now = datetime.now(UTC).isoformat().encode()
        futures = []
        for item in poison:
            record = item.record
            headers = [(name, value) for name, value in record.headers]
            headers += [
                (h.DLQ_ERROR, item.error.encode()),
                (h.DLQ_ORIGIN, f"{record.topic}/{record.partition}/{record.offset}".encode()),
                (h.DLQ_AT, now),
            ]
            futures.append(
                await self.producer.send(
                    self.topic, key=record.key, value=record.value, headers=headers
                )
            )
        for future in futures:
            await future
        DEAD_LETTERED.inc(len(futures))
