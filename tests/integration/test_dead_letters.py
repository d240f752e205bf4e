"""Dead letters and re-drive on the real broker and database, with a consumer running."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.dead_letters import KafkaDeadLetters
from consumers.redrive import redrive
from consumers.roster import RosterApplier
from consumers.runner import ConsumerRunner, consumer_options
from service.db.tables import event_log
from service.kafka.config import producer_options
from service.kafka.topics import CLEVER_EVENTS, TopicSpec, ensure_topics
from tests.support.factory import Factory
from tests.support.pipeline import (
    fresh_group,
    publish_garbage,
    publish_raw,
    running_consumer,
    topic_size,
)
from tests.support.services import Services
from tests.support.topic import read_topic


async def _log_rows(engine: AsyncEngine, ids: set[str]) -> dict[str, tuple[str, bool]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(event_log.c.event_id, event_log.c.status, event_log.c.dead_letter_pending).where(
                event_log.c.event_id.in_(ids)
            )
        )
        return {r.event_id: (r.status, r.dead_letter_pending) for r in rows}


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 (polling the database)
            await asyncio.sleep(0.05)


async def test_a_failed_dead_letter_send_is_retried_after_the_commit_and_sent_once(
    services: Services, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """The dead-letter topic is missing (the broker creates no topic by itself), so every send
    fails: the consumer keeps running and retries; the event is `dead_lettered` (committed) and
    marked pending meanwhile; once the topic exists the record is sent, once. A fresh group
    replaying the batch sends nothing more (item 10)."""
    factory = Factory()
    district = factory.oid()
    fine = factory.event("users.created", district)
    garbage = factory.oid()
    await publish_raw(services, [fine], "poller")
    await publish_garbage(services, district, garbage)
    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    await producer.start()  # the dead-letter producer
    dlq = TopicSpec(f"test.dlq.{uuid.uuid4().hex[:8]}", 1)
    ids = {fine["id"], garbage}

    Until = Callable[[ConsumerRunner[Any], "asyncio.Task[None]"], Awaitable[bool]]

    async def consume(group: str, until: Until) -> None:
        consumer = AIOKafkaConsumer(**consumer_options(services.kafka_bootstrap, group))
        await consumer.start()
        runner = ConsumerRunner(
            consumer,
            engine,
            RosterApplier(KafkaDeadLetters(producer, dlq.name)),
            topics=[CLEVER_EVENTS.name],
            max_batch=500,
            max_retry_delay=0.5,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await _until(lambda: until(runner, task))
        finally:
            stop.set()
            await task
            await consumer.stop()

    async def retrying(runner: ConsumerRunner[Any], task: asyncio.Task[None]) -> bool:
        assert not task.done(), task  # a failed send must not stop the consumer
        rows = await _log_rows(engine, ids)
        failed = any("after-commit step failed" in r.getMessage() for r in caplog.records)
        if rows.get(garbage) == ("dead_lettered", True) and failed:
            assert rows[fine["id"]] == ("applied", False)
            await ensure_topics(services.kafka_bootstrap, (dlq,))  # the cause, fixed
            return True
        return False

    async def sent(runner: ConsumerRunner[Any], task: asyncio.Task[None]) -> bool:
        assert not task.done(), task
        return (await _log_rows(engine, {garbage}))[garbage] == ("dead_lettered", False)

    try:
        with caplog.at_level(logging.WARNING, logger="consumers.runner"):
            await consume(f"dlq-{uuid.uuid4().hex[:8]}", retrying)
            await consume(f"dlq-{uuid.uuid4().hex[:8]}", sent)
        assert [r.event_id for r in await read_topic(services.kafka_bootstrap, dlq.name, ids)] == [
            garbage
        ]
        total = await topic_size(services)

        async def replayed(runner: ConsumerRunner[Any], task: asyncio.Task[None]) -> bool:
            assert not task.done(), task
            return runner.records >= total

        await consume(f"replay-{uuid.uuid4().hex[:8]}", replayed)
        again = await read_topic(services.kafka_bootstrap, dlq.name, ids)
        assert [r.event_id for r in again] == [garbage]  # not sent twice
    finally:
        await producer.stop()


_SLOW_COMMIT = """
CREATE OR REPLACE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN
    IF coalesce(current_setting('test.slept', true), '') = '' THEN  -- once per transaction
      PERFORM set_config('test.slept', 'yes', true);
      PERFORM pg_sleep(2);
    END IF;
    RETURN NULL;
  END $$
"""
_SLOW_RESET = """
CREATE CONSTRAINT TRIGGER test_slow_reset AFTER UPDATE ON event_log
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
  WHEN (NEW.district_id = '{district}' AND OLD.status = 'dead_lettered'
        AND NEW.status = 'accepted')
  EXECUTE FUNCTION test_slow_commit()
"""


async def test_redrive_while_a_consumer_runs_applies_every_event(
    services: Services, engine: AsyncEngine
) -> None:
    """The status reset is committed before the copies are published, so the running consumer
    never finds a re-driven event still `dead_lettered` and skips it for good (item 2)."""
    factory = Factory()
    district = factory.oid()
    blocked = [factory.event("users.created", district) for _ in range(20)]
    for event in blocked:
        event["data"]["object"]["name"]["first"] = "Redrivename"
    ids = {e["id"] for e in blocked}
    async with engine.begin() as conn:  # the "cause": a rule these events break
        await conn.execute(
            text(
                "ALTER TABLE users ADD CONSTRAINT test_redrive_block "
                "CHECK (name_first IS DISTINCT FROM 'Redrivename') NOT VALID"
            )
        )
    fixed = False
    try:
        async with running_consumer(services, engine, await fresh_group(services, "live")):
            await publish_raw(services, blocked, "poller")

            async def all_dead() -> bool:
                rows = await _log_rows(engine, ids)
                return len(rows) == len(ids) and {r for r, _ in rows.values()} == {"dead_lettered"}

            await _until(all_dead)
            async with engine.begin() as conn:  # the cause, fixed
                await conn.execute(text("ALTER TABLE users DROP CONSTRAINT test_redrive_block"))
            fixed = True
            # Re-drive's status reset takes 2 s to commit: a copy published before that commit
            # would reach the running consumer while the event still looks settled.
            async with engine.begin() as conn:
                await conn.execute(text(_SLOW_COMMIT))
                await conn.execute(text(_SLOW_RESET.format(district=district)))
            try:
                report = await redrive(services.kafka_bootstrap, engine, ids)
            finally:
                async with engine.begin() as conn:
                    await conn.execute(text("DROP TRIGGER test_slow_reset ON event_log"))
            assert report.redriven == len(ids)

            async def all_applied() -> bool:
                rows = await _log_rows(engine, ids)
                return {r for r, _ in rows.values()} == {"applied"}

            await _until(all_applied)
    finally:
        if not fixed:
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TABLE users DROP CONSTRAINT test_redrive_block"))
