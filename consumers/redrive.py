"""`roster redrive`: sends dead-lettered events through the consumer again, once their cause is
fixed.

The event log is the source of truth: every run reads the whole dead-letter topic and re-publishes
only the events whose status is still `dead_lettered` (optionally only the ids given), so running
it twice re-drives nothing twice. Safe while consumers run: the status goes back to `accepted`
(with `redrive_requested_at` set) and is committed *before* anything is re-published, so a
consumer can never read the copy while the event still looks settled and skip it for good. The
mark is cleared once Kafka has acknowledged the copies; a run that fails in between leaves the
events `accepted` and marked, and the next run finds them again and re-publishes (a copy sent
twice is applied once: the second is settled by then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import kafka_headers as h
from service.db.uow import UnitOfWork
from service.events import store as events
from service.kafka.config import producer_options
from service.kafka.topics import CLEVER_EVENTS, CLEVER_EVENTS_DLQ, Durability, ensure_topics


@dataclass
class RedriveReport:
    read: int = 0
    redriven: int = 0
    not_dead: int = 0  # applied since, or redriven before
    unidentifiable: int = 0  # no event id: cannot be tracked, left in the topic


async def _dead_letters(
    bootstrap: str,
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [
            TopicPartition(CLEVER_EVENTS_DLQ.name, p) for p in range(CLEVER_EVENTS_DLQ.partitions)
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found += [(r.key, r.value, list(r.headers)) for r in records]
        return found
    finally:
        await consumer.stop()


async def redrive(
    bootstrap: str,
    engine: AsyncEngine,
    only: Iterable[str] | None = None,
    durability: Durability = Durability(),  # noqa: B008 (frozen: one shared default is safe)
) -> RedriveReport:
    await ensure_topics(bootstrap, durability=durability)
    wanted = set(only) if only is not None else None
    report = RedriveReport()
    records = await _dead_letters(bootstrap)
    report.read = len(records)
    by_id = {}
    for key, value, headers in records:
        event_id = h.header_map(headers).get(h.EVENT_ID)
        if not event_id:
            report.unidentifiable += 1
        elif wanted is None or event_id in wanted:
            by_id[event_id] = (key, value, headers)  # the latest dead-lettering wins
    now = datetime.now(UTC)
    async with UnitOfWork(engine) as uow:
        to_send = await events.reset_dead_lettered(uow.connection, by_id, now)
        # Committed before the re-publish: a consumer must find the event unsettled.
        await uow.commit()
    report.not_dead = len(by_id) - len(to_send)
    producer = AIOKafkaProducer(**producer_options(bootstrap))
    await producer.start()
    try:
        stamp = now.isoformat().encode()
        futures = []
        for event_id in to_send:
            key, value, headers = by_id[event_id]
            kept = [(n, v) for n, v in headers if not n.startswith(h.DLQ_PREFIX)]
            futures.append(
                await producer.send(
                    CLEVER_EVENTS.name,
                    key=key,
                    value=value,
                    headers=[*kept, (h.REDRIVEN_AT, stamp)],
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    async with UnitOfWork(engine) as uow:  # acknowledged: a later run need not send them again
        await events.clear_redrive_marks(uow.connection, to_send, now)
        await uow.commit()
    report.redriven = len(to_send)
    return report
