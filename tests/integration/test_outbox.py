"""The outbox and its relay on the real broker and database: what was committed is published,
once, in order per key; nothing else is."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.roster import RosterApplier
from consumers.runner import ConsumerRunner
from schemas.roster_changes import CHANGE_TYPES, CHANGES_SOURCE, CHANGES_TOPIC
from service.db.uow import UnitOfWork
from service.kafka.config import producer_options
from service.outbox.relay import Relay
from tests.support.changes import Received, read_cloudevents
from tests.support.district import generate, oracle
from tests.support.factory import Factory
from tests.support.pipeline import (
    NoDeadLetters,
    as_records,
    fresh_group,
    publish_raw,
    roster_process,
    run_consumer,
    running_relay,
    settled,
    topic_size,
)
from tests.support.services import Services, start_kafka, stop_kafka


async def outbox_rows(engine: AsyncEngine, district_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, message_key, type, sequence, sent_at FROM outbox "
                "WHERE district_id = :d ORDER BY id"
            ),
            {"d": district_id},
        )
        return [dict(r._mapping) for r in rows]


async def wait_sent(engine: AsyncEngine, district_id: str, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while any(  # noqa: ASYNC110 (polling the database)
            r["sent_at"] is None for r in await outbox_rows(engine, district_id)
        ):
            await asyncio.sleep(0.05)


def check_sequences(messages: Sequence[Received]) -> None:
    """Per key, the sequence numbers on the topic run 1, 2, 3, ... in offset order."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        by_key[m.key].append(m.sequence)
    for key, sequences in by_key.items():
        assert sequences == list(range(1, len(sequences) + 1)), key


async def test_committed_changes_reach_the_topic_once_in_order_and_replays_add_nothing(
    services: Services, engine: AsyncEngine
) -> None:
    district = generate(Factory(), changes=150)
    expected = oracle(district.events)
    group = await fresh_group(services, "out")
    await publish_raw(services, district.events, "poller")
    ids = {e["id"] for e in district.events}
    async with running_relay(services, engine):
        await run_consumer(services, engine, group, settled(engine, ids))
        await wait_sent(engine, district.id)
    rows = await outbox_rows(engine, district.id)
    messages = await read_cloudevents(services.kafka_bootstrap, CHANGES_TOPIC, district.id)

    # Exactly the committed rows, each once.
    assert sorted(m.id for m in messages) == sorted(
        f"{r['message_key']}.{r['sequence']}" for r in rows
    )
    check_sequences(messages)
    applied = {eid for eid, outcome in expected.outcomes.items() if outcome == "applied"}
    for m in messages:
        assert m.attributes["specversion"] == "1.0"
        assert m.attributes["source"] == CHANGES_SOURCE
        assert m.attributes["subject"] == m.key == m.data["id"]
        assert m.attributes["datacontenttype"] == "application/json"
        assert m.data["sequence"] == m.sequence
        assert m.data["source_event_id"] in applied  # never a stale or duplicate event
        CHANGE_TYPES[m.type].model_validate(m.data)  # the published schema holds

    # The last message per entity tells the final state; enrollments replay to the memberships.
    last: dict[str, Received] = {m.key: m for m in messages}
    for (kind, rid), (_, deleted) in expected.records.items():
        if kind == "sections":
            assert last[rid].type == f"roster.section.{'deleted' if deleted else 'upserted'}"
        if kind == "users" and rid in district.students:
            assert last[rid].type == f"roster.student.{'deleted' if deleted else 'upserted'}"
    enrolled = {
        (m.data["section_id"], m.data["student_id"])
        for key, m in last.items()
        if m.type == "roster.enrollment.added"
    }
    live = {rid for (kind, rid), (_, deleted) in expected.records.items() if kind == "sections"}
    live -= {rid for (kind, rid), (_, d) in expected.records.items() if kind == "sections" and d}
    assert enrolled == {
        (s, u) for s, role, u in expected.members if role == "student" and s in live
    }

    # A replay of the whole inbound topic by a fresh group: no new outbox row, no new message.
    total = await topic_size(services)

    async def read_all(runner: ConsumerRunner[Any]) -> bool:
        return runner.records >= total

    async with running_relay(services, engine):
        await run_consumer(services, engine, f"replay-{uuid.uuid4().hex[:8]}", read_all)
        await asyncio.sleep(0.5)
    assert await outbox_rows(engine, district.id) == rows
    again = await read_cloudevents(services.kafka_bootstrap, CHANGES_TOPIC, district.id)
    assert len(again) == len(messages)


async def test_a_rolled_back_batch_publishes_nothing_and_its_commit_publishes_it(
    services: Services, engine: AsyncEngine
) -> None:
    factory = Factory()
    district = generate(factory, students=10, sections=2, changes=10)
    records = as_records(district.events)
    applier = RosterApplier(NoDeadLetters())

    class Injected(Exception):
        pass

    try:
        async with UnitOfWork(engine) as uow:
            await applier.handle(uow, records)
            assert await outbox_rows(engine, district.id) == []  # not visible before commit
            raise Injected  # after the writes, before the commit
    except Injected:
        pass
    async with running_relay(services, engine) as relay:
        await asyncio.sleep(0.5)
        assert await outbox_rows(engine, district.id) == []
        assert await read_cloudevents(services.kafka_bootstrap, CHANGES_TOPIC, district.id) == []

        published = relay.published
        async with UnitOfWork(engine) as uow:  # the same batch again, committed this time
            await applier.handle(uow, records)
            await uow.commit()
        await wait_sent(engine, district.id, timeout=10)
        assert relay.published > published
    rows = await outbox_rows(engine, district.id)
    messages = await read_cloudevents(services.kafka_bootstrap, CHANGES_TOPIC, district.id)
    assert rows and len(messages) == len(rows)


def _relay_process(services: Services, **env: str) -> subprocess.Popen[bytes]:
    return roster_process(services, "relay", **env)


async def test_a_relay_killed_between_publish_and_mark_causes_duplicates_never_loss(
    services: Services, engine: AsyncEngine
) -> None:
    district = generate(Factory(), changes=60)
    records = as_records(district.events)
    async with UnitOfWork(engine) as uow:
        await RosterApplier(NoDeadLetters()).handle(uow, records)
        await uow.commit()
    rows = await outbox_rows(engine, district.id)
    assert rows and all(r["sent_at"] is None for r in rows)

    doomed = _relay_process(services, ROSTER_FAILPOINTS="relay.after_publish")
    code = await asyncio.to_thread(doomed.wait, 60)
    assert code == -9  # SIGKILLed itself right after the broker acknowledged
    assert all(r["sent_at"] is None for r in await outbox_rows(engine, district.id))
    first = await read_cloudevents(services.kafka_bootstrap, CHANGES_TOPIC, district.id)
    assert first, "the killed relay published before dying"

    async with running_relay(services, engine):
        await wait_sent(engine, district.id)
    messages = await read_cloudevents(services.kafka_bootstrap, CHANGES_TOPIC, district.id)
    wanted = {f"{r['message_key']}.{r['sequence']}" for r in rows}
    counts = Counter(m.id for m in messages)
    assert set(counts) == wanted  # nothing lost, nothing foreign
    assert max(counts.values()) == 2  # the re-published copies...
    for m in messages:  # ...carry the same sequence, so a subscriber drops them
        assert m.id == f"{m.key}.{m.sequence}"


async def test_two_relays_at_once_publish_each_row_once_in_order(
    services: Services, engine: AsyncEngine
) -> None:
    factory = Factory()
    districts = [generate(factory, changes=120) for _ in range(3)]
    for district in districts:
        async with UnitOfWork(engine) as uow:
            await RosterApplier(NoDeadLetters()).handle(uow, as_records(district.events))
            await uow.commit()
    async with running_relay(services, engine) as one, running_relay(services, engine) as two:
        for district in districts:
            await wait_sent(engine, district.id)
    assert one.published > 0 or two.published > 0
    for district in districts:
        rows = await outbox_rows(engine, district.id)
        messages = await read_cloudevents(services.kafka_bootstrap, CHANGES_TOPIC, district.id)
        assert len(messages) == len(rows)
        assert {m.id for m in messages} == {f"{r['message_key']}.{r['sequence']}" for r in rows}
        check_sequences(messages)


async def test_sent_rows_are_pruned_after_retention_and_unsent_rows_never(
    services: Services, engine: AsyncEngine
) -> None:
    sent_district = generate(Factory(), students=10, sections=2, changes=5)
    async with UnitOfWork(engine) as uow:
        await RosterApplier(NoDeadLetters()).handle(uow, as_records(sent_district.events))
        await uow.commit()
    async with running_relay(services, engine):
        await wait_sent(engine, sent_district.id)
    pending_district = generate(Factory(), students=10, sections=2, changes=5)
    async with UnitOfWork(engine) as uow:  # committed, but no relay runs: stays unsent
        await RosterApplier(NoDeadLetters()).handle(uow, as_records(pending_district.events))
        await uow.commit()
    pending = await outbox_rows(engine, pending_district.id)
    assert pending and all(r["sent_at"] is None for r in pending)

    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    keeping = Relay(engine, producer, retention_seconds=3600)
    await keeping.housekeeping()
    assert await outbox_rows(engine, sent_district.id)  # within retention: kept
    pruning = Relay(engine, producer, retention_seconds=0)
    await pruning.housekeeping()
    assert await outbox_rows(engine, sent_district.id) == []
    assert await outbox_rows(engine, pending_district.id) == pending
    async with running_relay(services, engine):  # leave nothing pending for other tests
        await wait_sent(engine, pending_district.id)


async def test_the_backlog_age_is_the_oldest_waiting_row_and_falls_to_zero_once_sent(
    services: Services, engine: AsyncEngine
) -> None:
    """`roster_outbox_backlog_age_seconds`, the outbox alert's signal: the age of the oldest row
    no relay has published yet (aged here by moving its `written_at` back an hour)."""
    district = generate(Factory(), students=5, sections=1, changes=3)
    async with UnitOfWork(engine) as uow:  # committed, but no relay runs: stays unsent
        await RosterApplier(NoDeadLetters()).handle(uow, as_records(district.events))
        await uow.commit()
    async with UnitOfWork(engine) as uow:
        await uow.connection.execute(
            text(
                "UPDATE outbox SET written_at = written_at - interval '1 hour'"
                " WHERE district_id = :d"
            ),
            {"d": district.id},
        )
        await uow.commit()
    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    await Relay(engine, producer).housekeeping()  # samples; publishes nothing
    age = REGISTRY.get_sample_value("roster_outbox_backlog_age_seconds")
    waiting = REGISTRY.get_sample_value("roster_outbox_backlog")
    assert age is not None and age >= 3600
    assert waiting is not None and waiting >= len(await outbox_rows(engine, district.id))

    async with running_relay(services, engine):
        await wait_sent(engine, district.id)
    await Relay(engine, producer).housekeeping()
    assert REGISTRY.get_sample_value("roster_outbox_backlog") == 0
    assert REGISTRY.get_sample_value("roster_outbox_backlog_age_seconds") == 0


async def test_a_broker_outage_holds_the_outbox_and_loses_nothing(
    services: Services, engine: AsyncEngine
) -> None:
    if services.local_kafka is None:
        pytest.skip("stopping the broker needs the project's own broker")
    district = generate(Factory(), students=10, sections=3, changes=20)
    async with running_relay(services, engine):
        await asyncio.to_thread(stop_kafka, services)
        try:
            async with UnitOfWork(engine) as uow:  # committed while the broker is down
                await RosterApplier(NoDeadLetters()).handle(uow, as_records(district.events))
                await uow.commit()
            await asyncio.sleep(3)
            rows = await outbox_rows(engine, district.id)
            assert rows and all(r["sent_at"] is None for r in rows)  # held, not marked sent
        finally:
            await asyncio.to_thread(start_kafka, services)
        await wait_sent(engine, district.id, timeout=90)
    messages = await read_cloudevents(services.kafka_bootstrap, CHANGES_TOPIC, district.id)
    assert {m.id for m in messages} == {f"{r['message_key']}.{r['sequence']}" for r in rows}
    copies: dict[str, dict[str, Any]] = {}
    for m in messages:  # a re-sent copy (the producer's own retry) is the same message
        assert copies.setdefault(m.id, m.data) == m.data
