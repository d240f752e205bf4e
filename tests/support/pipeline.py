"""The pipeline's pieces run in-process against the real broker and database (test helpers)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.dead_letters import KafkaDeadLetters
from consumers.roster import RosterApplier
from consumers.runner import ConsumerRunner, Record, consumer_options
from schemas import kafka_headers as h
from service.db.tables import event_log
from service.kafka.config import producer_options
from service.kafka.topics import CLEVER_EVENTS, ensure_topics
from service.outbox.relay import Relay
from service.paths import project_root
from tests.support.services import Services
from tests.support.webhook import encode


@asynccontextmanager
async def running_consumer(
    services: Services, engine: AsyncEngine, group: str, max_batch: int = 200
) -> AsyncIterator[tuple[ConsumerRunner[Any], asyncio.Task[None]]]:
    """The real consumer loop (group `group`) in the background, stopped on exit."""
    await ensure_topics(services.kafka_bootstrap)
    consumer = AIOKafkaConsumer(**consumer_options(services.kafka_bootstrap, group))
    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    await producer.start()
    await consumer.start()
    runner = ConsumerRunner(
        consumer,
        engine,
        RosterApplier(KafkaDeadLetters(producer)),
        topics=[CLEVER_EVENTS.name],
        max_batch=max_batch,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner, task
    finally:
        stop.set()
        await task
        await consumer.stop()
        await producer.stop()


async def fresh_group(services: Services, prefix: str) -> str:
    """A new consumer group whose committed offsets are the inbound topic's end: its consumer
    reads what the test publishes after this call, not the whole history earlier tests left on
    the shared topic (rereading that made the tests slow, not more thorough)."""
    await ensure_topics(services.kafka_bootstrap)
    group = f"{prefix}-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(**consumer_options(services.kafka_bootstrap, group))
    await consumer.start()
    try:
        parts = [TopicPartition(CLEVER_EVENTS.name, p) for p in range(CLEVER_EVENTS.partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()
    return group


async def run_consumer(
    services: Services,
    engine: AsyncEngine,
    group: str,
    done: Callable[[ConsumerRunner[Any]], Awaitable[bool]],
    timeout: float = 90.0,
    max_batch: int = 200,
) -> ConsumerRunner[Any]:
    """Runs the real consumer loop (group `group`) until `done` says so."""
    async with running_consumer(services, engine, group, max_batch) as (runner, task):
        async with asyncio.timeout(timeout):
            while not await done(runner):
                assert not task.done() or task.exception() is None, task.exception()
                await asyncio.sleep(0.2)
    return runner


def settled(engine: AsyncEngine, ids: set[str]) -> Callable[[ConsumerRunner[Any]], Awaitable[bool]]:
    async def check(_: ConsumerRunner[Any]) -> bool:
        return await settled_count(engine, ids) == len(ids)

    return check


async def topic_size(services: Services) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=services.kafka_bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(CLEVER_EVENTS.name, p) for p in range(CLEVER_EVENTS.partitions)]
        return sum((await consumer.end_offsets(parts)).values())
    finally:
        await consumer.stop()


async def publish_raw(services: Services, events: list[dict[str, Any]], source: str) -> None:
    """Puts events on the inbound topic as another door (poller, backfill) would."""
    await ensure_topics(services.kafka_bootstrap)
    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    await producer.start()
    try:
        for event in events:
            obj = event["data"]["object"]
            district = obj["id"] if event["type"].startswith("districts.") else obj["district"]
            await producer.send(
                CLEVER_EVENTS.name,
                key=district.encode(),
                value=encode(event),
                headers=[
                    (h.EVENT_ID, event["id"].encode()),
                    (h.EVENT_TYPE, event["type"].encode()),
                    (h.SOURCE, source.encode()),
                ],
            )
        await producer.flush()
    finally:
        await producer.stop()


async def publish_garbage(services: Services, district: str, event_id: str) -> None:
    """Puts a record on the inbound topic that is no Clever event (not even JSON), with an
    event id header: what the consumer can only dead-letter."""
    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    await producer.start()
    try:
        await producer.send_and_wait(
            CLEVER_EVENTS.name,
            key=district.encode(),
            value=b"{not json",
            headers=[(h.EVENT_ID, event_id.encode()), (h.SOURCE, b"poller")],
        )
    finally:
        await producer.stop()


async def settled_count(engine: AsyncEngine, ids: set[str]) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(event_log)
            .where(
                event_log.c.event_id.in_(ids),
                event_log.c.status.in_(("applied", "stale", "dead_lettered")),
            )
        )
    return int(count or 0)


@asynccontextmanager
async def running_relay(services: Services, engine: AsyncEngine) -> AsyncIterator[Relay]:
    """The real relay loop (LISTEN/NOTIFY included) in the background."""
    await ensure_topics(services.kafka_bootstrap)
    options = producer_options(services.kafka_bootstrap)
    producer = AIOKafkaProducer(**options)
    await producer.start()
    relay = Relay(engine, producer, batch=500, poll_seconds=5.0, producer_options=options)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await task
        await relay.producer.stop()


@dataclass
class FakeRecord:
    """A consumer record as the runner hands it over (the handler reads only these fields)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def as_records(events: list[dict[str, Any]]) -> list[Record]:
    return [
        FakeRecord(
            "clever.events.v1",
            0,
            i,
            0,
            e["data"]["object"].get("district", "").encode(),
            orjson.dumps(e),
            [(h.EVENT_ID, e["id"].encode()), (h.SOURCE, b"poller")],
        )
        for i, e in enumerate(events)
    ]


class NoDeadLetters:
    async def send(self, poison: Sequence[Any]) -> None:
        raise AssertionError(f"unexpected dead letters: {poison}")


def roster_logging(command: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`roster <command>` with exactly `env`, its log (stderr) piped as text for the test."""
    return subprocess.Popen(
        [sys.executable, "-m", "service", command],
        cwd=project_root(),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def roster_process(services: Services, command: str, **env: str) -> subprocess.Popen[bytes]:
    """`roster <command>` as its own process on the test broker and database (quiet, no
    metrics port); `env` adds settings, e.g. ROSTER_CONSUMER_GROUP."""
    full = dict(os.environ) | {
        "ROSTER_DATABASE_URL": services.database_url,
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "ROSTER_LOG_LEVEL": "WARNING",
        "ROSTER_CONSUMER_METRICS_PORT": "0",
        "ROSTER_RELAY_METRICS_PORT": "0",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service", command],
        env=full,
        cwd=project_root(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
