"""The consumer frame on the real broker and database: offsets move only after the DB commit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.runner import ConsumerRunner, Record, consumer_options
from schemas import kafka_headers as h
from service.db.tables import event_log
from service.db.uow import UnitOfWork
from service.kafka.config import producer_options
from service.kafka.topics import TopicSpec, ensure_topics
from tests.support.event_log import EventLogRecorder
from tests.support.services import Services


class Boom(Exception):
    pass


class FailingHandler:
    async def after_commit(self, engine: AsyncEngine, result: object) -> None:
        pass

    def committed(self, result: object) -> None:
        raise AssertionError("never committed")

    async def handle(self, uow: UnitOfWork, records: Sequence[Record]) -> None:
        await EventLogRecorder().handle(uow, records)  # written, then rolled back
        raise Boom("handler failed")


async def _publish(bootstrap: str, topic: str, ids: list[str]) -> None:
    producer = AIOKafkaProducer(**producer_options(bootstrap))
    await producer.start()
    try:
        for i, event_id in enumerate(ids):
            await producer.send(
                topic,
                key=f"district-{i % 3}".encode(),
                value=b"{}",
                headers=[
                    (h.EVENT_ID, event_id.encode()),
                    (h.EVENT_TYPE, b"users.updated"),
                    (h.SOURCE, b"webhook"),
                    (h.RECEIVED_AT, datetime.now(UTC).isoformat().encode()),
                ],
            )
        await producer.flush()
    finally:
        await producer.stop()


async def _committed(bootstrap: str, topic: str, group: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        await consumer.stop()


async def _run_until(
    runner: ConsumerRunner[Any],
    done: asyncio.Event | None,
    stop: asyncio.Event,
    timeout: float = 30.0,
) -> None:
    task = asyncio.create_task(runner.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not task.done() and not (done is not None and done.is_set()):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


async def _run_until_read(runner: ConsumerRunner[Any], count: int) -> None:
    """Runs the loop until it has applied `count` records."""
    done = asyncio.Event()

    async def watch() -> None:
        while runner.records < count:  # noqa: ASYNC110 (polls the runner's progress)
            await asyncio.sleep(0.05)
        done.set()

    watcher = asyncio.create_task(watch())
    try:
        await _run_until(runner, done, asyncio.Event())
    finally:
        watcher.cancel()


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_offsets_commit_only_after_database_commit(
    services: Services, engine: AsyncEngine, concurrency: int
) -> None:
    topic = f"test.runner.{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 3),))
    ids = [f"evt-{uuid.uuid4().hex}" for _ in range(30)]
    await _publish(services.kafka_bootstrap, topic, ids)

    # A handler that fails: nothing reaches the database and no offset is committed.
    consumer = AIOKafkaConsumer(**consumer_options(services.kafka_bootstrap, group))
    await consumer.start()
    try:
        failing = ConsumerRunner(
            consumer,
            engine,
            FailingHandler(),
            topics=[topic],
            max_batch=7,
            concurrency=concurrency,
        )
        with pytest.raises(Boom):
            await _run_until(failing, None, asyncio.Event())
    finally:
        await consumer.stop()
    assert await _committed(services.kafka_bootstrap, topic, group) == {0: None, 1: None, 2: None}
    async with engine.connect() as conn:
        found = (
            await conn.execute(select(event_log.c.event_id).where(event_log.c.event_id.in_(ids)))
        ).all()
    assert found == []

    # The same group, with a working handler, then reads everything from the start.
    consumer = AIOKafkaConsumer(**consumer_options(services.kafka_bootstrap, group))
    await consumer.start()
    runner = ConsumerRunner(
        consumer,
        engine,
        EventLogRecorder(),
        topics=[topic],
        max_batch=7,
        concurrency=concurrency,
    )
    try:
        await _run_until_read(runner, len(ids))
    finally:
        await consumer.stop()
    assert runner.batches >= len(ids) // 7  # bounded batches

    async with engine.connect() as conn:
        rows = (
            (await conn.execute(select(event_log).where(event_log.c.event_id.in_(ids))))
            .mappings()
            .all()
        )
    assert sorted(r["event_id"] for r in rows) == sorted(ids)
    assert all(r["kafka_partition"] in (0, 1, 2) and r["kafka_offset"] is not None for r in rows)
    per_partition = {p: sum(1 for r in rows if r["kafka_partition"] == p) for p in range(3)}
    committed = await _committed(services.kafka_bootstrap, topic, group)
    assert {p: committed[p] or 0 for p in range(3)} == per_partition


class ConnectionKilledOnce:
    """On its first batch, has PostgreSQL terminate the handler's own connection: a real
    transient failure (the server closes the session mid-transaction)."""

    def __init__(self) -> None:
        self.inner = EventLogRecorder()
        self.attempts = 0

    async def handle(self, uow: UnitOfWork, records: Sequence[Record]) -> None:
        self.attempts += 1
        await self.inner.handle(uow, records)
        if self.attempts == 1:
            await uow.connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    async def after_commit(self, engine: AsyncEngine, result: object) -> None:
        pass

    def committed(self, result: object) -> None:
        pass


async def test_a_transient_database_failure_retries_the_batch_without_loss(
    services: Services, engine: AsyncEngine
) -> None:
    topic = f"test.transient.{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 3),))
    ids = [f"evt-{uuid.uuid4().hex}" for _ in range(12)]
    await _publish(services.kafka_bootstrap, topic, ids)
    handler = ConnectionKilledOnce()
    consumer = AIOKafkaConsumer(**consumer_options(services.kafka_bootstrap, group))
    await consumer.start()
    runner = ConsumerRunner(consumer, engine, handler, topics=[topic], max_batch=100)
    try:
        await _run_until_read(runner, len(ids))
    finally:
        await consumer.stop()
    assert handler.attempts >= 2  # the first attempt failed and was retried
    async with engine.connect() as conn:
        found = (
            await conn.execute(select(event_log.c.event_id).where(event_log.c.event_id.in_(ids)))
        ).all()
    assert sorted(r[0] for r in found) == sorted(ids)
    committed = await _committed(services.kafka_bootstrap, topic, group)
    assert sum(v or 0 for v in committed.values()) == len(ids)


class FailsOnPartitionZero:
    async def handle(self, uow: UnitOfWork, records: Sequence[Record]) -> None:
        await EventLogRecorder().handle(uow, records)
        if any(r.partition == 0 for r in records):
            raise Boom("partition 0 fails")

    async def after_commit(self, engine: AsyncEngine, result: object) -> None:
        pass

    def committed(self, result: object) -> None:
        pass


async def test_concurrent_batches_commit_their_own_offsets_only(
    services: Services, engine: AsyncEngine
) -> None:
    """With batches in flight at once, a failing batch commits nothing, and the batches that
    committed have exactly their offsets committed."""
    topic = f"test.groups.{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 3),))
    ids = [f"evt-{uuid.uuid4().hex}" for _ in range(60)]
    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    await producer.start()
    try:  # every partition gets records, whatever the keys hash to
        for i, event_id in enumerate(ids):
            await producer.send(
                topic,
                value=b"{}",
                key=b"k",
                partition=i % 3,
                headers=[(h.EVENT_ID, event_id.encode()), (h.SOURCE, b"webhook")],
            )
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**consumer_options(services.kafka_bootstrap, group))
    await consumer.start()
    try:
        runner = ConsumerRunner(
            consumer, engine, FailsOnPartitionZero(), topics=[topic], max_batch=5, concurrency=3
        )
        with pytest.raises(Boom):
            await _run_until(runner, None, asyncio.Event())
    finally:
        await consumer.stop()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(event_log.c.kafka_partition).where(event_log.c.event_id.in_(ids))
            )
        ).all()
    in_db = {p: sum(1 for r in rows if r[0] == p) for p in range(3)}
    committed = await _committed(services.kafka_bootstrap, topic, group)
    assert committed[0] is None and in_db[0] == 0
    assert {p: committed[p] or 0 for p in (1, 2)} == {1: in_db[1], 2: in_db[2]}
