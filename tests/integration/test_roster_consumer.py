"""The roster consumer on the real broker and database: applied once, in order, whatever fails."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

import orjson
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.runner import ConsumerRunner
from service.db.tables import RECORD_TABLES, event_log, section_members
from service.kafka.topics import CLEVER_EVENTS, CLEVER_EVENTS_DLQ
from service.paths import project_root
from tests.integration.conftest import Api
from tests.support.district import Expected, generate, oracle
from tests.support.factory import Factory, page
from tests.support.pipeline import (
    fresh_group,
    publish_garbage,
    publish_raw,
    roster_process,
    run_consumer,
    settled,
    settled_count,
    topic_size,
)
from tests.support.services import Services
from tests.support.topic import read_topic
from tests.support.webhook import ADMIN_TOKEN, encode, signed_headers

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


async def snapshot(engine: AsyncEngine, district_id: str) -> dict[str, Any]:
    """Everything the consumer wrote for a district, including when each row was last written."""
    out: dict[str, Any] = {}
    async with engine.connect() as conn:
        for kind, table in RECORD_TABLES.items():
            rows = await conn.execute(
                select(
                    table.c.id, table.c.version_event, table.c.deleted, table.c.updated_at
                ).where(table.c.district_id == district_id)
            )
            out[kind] = {r.id: (r.version_event, r.deleted, r.updated_at) for r in rows}
        members = await conn.execute(
            select(section_members).where(section_members.c.section_id.in_(out["sections"]))
        )
        out["members"] = {(m.section_id, m.role, m.user_id) for m in members}
        links = await conn.execute(
            text("SELECT user_id, role, school_id FROM user_schools WHERE user_id = ANY(:ids)"),
            {"ids": list(out["users"])},
        )
        out["user_schools"] = {tuple(r) for r in links}
        log_rows = await conn.execute(
            select(event_log.c.event_id, event_log.c.status, event_log.c.applied_at).where(
                event_log.c.district_id == district_id
            )
        )
        out["event_log"] = {r.event_id: (r.status, r.applied_at) for r in log_rows}
    return out


def assert_matches(state: dict[str, Any], expected: Expected) -> None:
    got = {
        (kind, rid): (row[0], row[1]) for kind in RECORD_TABLES for rid, row in state[kind].items()
    }
    assert got == expected.records
    assert state["members"] == expected.members
    assert {eid: status for eid, (status, _) in state["event_log"].items()} == expected.outcomes


async def test_webhook_to_roster_end_to_end_then_redelivery_and_replay_change_nothing(
    api: Api, services: Services, engine: AsyncEngine
) -> None:
    district = generate(Factory())
    expected = oracle(district.events)
    group = await fresh_group(services, "roster")
    for start in range(0, len(district.events), 25):
        body = encode(page(district.events[start : start + 25]))
        response = await api.client.post(
            "/webhooks/clever", content=body, headers=signed_headers(body)
        )
        assert response.status_code == 202
    ids = {e["id"] for e in district.events}

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    applied_before = sample("roster_events_applied_total", outcome="applied")
    stale_before = sample("roster_events_applied_total", outcome="stale")
    latencies_before = sample("roster_apply_latency_seconds_count")
    await run_consumer(services, engine, group, settled(engine, ids))
    state = await snapshot(engine, district.id)
    assert_matches(state, expected)
    counts = Counter(expected.outcomes.values())
    # At least ours (the registry is the whole test process's).
    assert (
        sample("roster_events_applied_total", outcome="applied") - applied_before
        >= counts["applied"]
    )
    assert sample("roster_events_applied_total", outcome="stale") - stale_before >= counts["stale"]
    assert sample("roster_apply_latency_seconds_count") - latencies_before >= len(ids)
    assert any(m.name == "roster_consumer_lag" and m.samples for m in REGISTRY.collect())

    for student in district.students[:8]:
        answer = (await api.client.get(f"/v1/students/{student}", headers=ADMIN)).json()
        assert answer["school_ids"] == expected.student_schools.get(student, [])
        assert answer["section_ids"] == expected.student_sections.get(student, [])
        assert answer["deleted"] == expected.records[("users", student)][1]
    for section in district.sections:
        answer = (await api.client.get(f"/v1/sections/{section}", headers=ADMIN)).json()
        assert answer["student_ids"] == sorted(
            u for s, r, u in expected.members if s == section and r == "student"
        )
        assert answer["deleted"] == expected.records[("sections", section)][1]
    # Each record keeps the winning event's object as Clever sent it (every field).
    by_id = {e["id"]: e for e in district.events}
    async with engine.connect() as conn:
        for kind, rid in [("users", district.students[0]), ("sections", district.sections[0])]:
            stored = await conn.scalar(
                select(RECORD_TABLES[kind].c.data).where(RECORD_TABLES[kind].c.id == rid)
            )
            assert stored == by_id[expected.records[(kind, rid)][0]]["data"]["object"]
    one = (await api.client.get(f"/v1/events/{district.events[0]['id']}", headers=ADMIN)).json()
    assert one["status"] == "applied" and one["applied_at"] is not None

    # Redelivery through another door: the same events again, read by the same group.
    await publish_raw(services, district.events, "backfill")

    async def read_them(runner: ConsumerRunner[Any]) -> bool:
        return runner.records >= len(district.events)

    await run_consumer(services, engine, group, read_them)
    assert await snapshot(engine, district.id) == state  # not even rewritten (updated_at)

    # Replay of the whole topic from offset 0 by a fresh group.
    total = await topic_size(services)

    async def read_all(runner: ConsumerRunner[Any]) -> bool:
        return runner.records >= total

    await run_consumer(services, engine, f"replay-{uuid.uuid4().hex[:8]}", read_all)
    assert await snapshot(engine, district.id) == state


async def test_a_poison_event_is_dead_lettered_and_its_neighbours_applied(
    services: Services, engine: AsyncEngine
) -> None:
    factory = Factory()
    district = factory.oid()
    before = factory.event("users.created", district)
    poison = factory.event("users.created", district)
    poison["data"]["object"]["name"]["first"] = "bad\u0000name"  # PostgreSQL refuses NUL
    after = factory.event("sections.created", district)
    group = await fresh_group(services, "poison")
    await publish_raw(services, [before, poison, after], "poller")
    garbage_id = factory.oid()
    await publish_garbage(services, district, garbage_id)

    ids = {before["id"], poison["id"], after["id"], garbage_id}
    await run_consumer(services, engine, group, settled(engine, ids))
    async with engine.connect() as conn:
        rows = {
            r.event_id: (r.status, r.error)
            for r in await conn.execute(
                select(event_log.c.event_id, event_log.c.status, event_log.c.error).where(
                    event_log.c.event_id.in_(ids)
                )
            )
        }
    assert rows[before["id"]] == ("applied", None)
    assert rows[after["id"]] == ("applied", None)
    status, error = rows[poison["id"]]
    assert status == "dead_lettered" and "invalid byte sequence" in error
    assert "INSERT" not in error and "bad" not in error  # no statement, no values
    assert (
        rows[garbage_id][0] == "dead_lettered" and "not a valid Clever event" in rows[garbage_id][1]
    )

    dead = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS_DLQ.name, ids)
    assert sorted(d.event_id for d in dead) == sorted([poison["id"], garbage_id])
    for record in dead:
        assert record.key == district.encode()
        assert record.headers["dlq-error"]
        assert record.headers["dlq-origin"].startswith(f"{CLEVER_EVENTS.name}/")
    assert orjson.loads(next(d for d in dead if d.event_id == poison["id"]).value) == poison


def _consume_process(services: Services, group: str) -> subprocess.Popen[bytes]:
    # Small batches: the kill lands between and inside them.
    return roster_process(
        services, "consume", ROSTER_CONSUMER_GROUP=group, ROSTER_CONSUMER_MAX_BATCH="25"
    )


async def test_sigkilled_consumer_restarts_to_exactly_the_oracle(
    services: Services, engine: AsyncEngine
) -> None:
    factory = Factory()
    districts = [generate(factory, students=40, sections=8, changes=500) for _ in range(4)]
    events = [e for d in districts for e in d.events]
    ids = {e["id"] for e in events}
    group = await fresh_group(services, "crash")
    await publish_raw(services, events, "poller")

    first = _consume_process(services, group)
    try:
        async with asyncio.timeout(120):
            while (done := await settled_count(engine, ids)) < len(ids) // 5:
                assert first.poll() is None
                await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)  # no drain, no offset commit, mid-stream
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert done < len(ids), "the consumer finished before it could be killed"

    second = _consume_process(services, group)
    try:
        async with asyncio.timeout(180):
            while await settled_count(engine, ids) < len(ids):
                assert second.poll() is None
                await asyncio.sleep(0.2)
    finally:
        second.terminate()
        assert second.wait(timeout=60) == 0  # SIGTERM drains cleanly

    for district in districts:
        assert_matches(await snapshot(engine, district.id), oracle(district.events))


async def test_redrive_after_the_cause_is_fixed(services: Services, engine: AsyncEngine) -> None:
    factory = Factory()
    district = factory.oid()
    blocked = factory.event("users.created", district)
    blocked["data"]["object"]["name"]["first"] = "Blockedname"
    fine = factory.event("users.created", district)
    ids = {blocked["id"], fine["id"]}
    async with engine.begin() as conn:  # the "cause": a rule this event breaks
        await conn.execute(
            text(
                "ALTER TABLE users ADD CONSTRAINT test_block "
                "CHECK (name_first IS DISTINCT FROM 'Blockedname') NOT VALID"
            )
        )
    try:
        await publish_raw(services, [blocked, fine], "poller")
        group = f"redrive-{uuid.uuid4().hex[:8]}"
        await run_consumer(services, engine, group, settled(engine, ids))
        async with engine.connect() as conn:
            status = await conn.scalar(
                select(event_log.c.status).where(event_log.c.event_id == blocked["id"])
            )
        assert status == "dead_lettered"
    finally:
        async with engine.begin() as conn:  # the cause, fixed
            await conn.execute(text("ALTER TABLE users DROP CONSTRAINT test_block"))

    env = dict(os.environ) | {
        "ROSTER_DATABASE_URL": services.database_url,
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
    }
    command = [sys.executable, "-m", "service", "redrive", "--event-id", blocked["id"]]

    def run_cli() -> str:
        done = subprocess.run(
            command,
            env=env,
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    assert "roster redrive: 1 re-published" in await asyncio.to_thread(run_cli)
    # Nothing is re-driven twice.
    assert "roster redrive: 0 re-published" in await asyncio.to_thread(run_cli)

    async def applied(_: ConsumerRunner[Any]) -> bool:
        async with engine.connect() as conn:
            return (
                await conn.scalar(
                    select(event_log.c.status).where(event_log.c.event_id == blocked["id"])
                )
                == "applied"
            )

    await run_consumer(services, engine, group, applied)
    answer = (await snapshot(engine, district))["users"]
    assert answer[blocked["data"]["object"]["id"]][0] == blocked["id"]


async def test_two_consumer_processes_at_once_reach_the_oracle(
    services: Services, engine: AsyncEngine
) -> None:
    """Two processes share the group (partitions split, rebalances while both join); districts
    are advisory-locked, so even a batch still in flight during a rebalance cannot interleave."""
    factory = Factory()
    districts = [generate(factory, changes=200) for _ in range(6)]
    events = [e for d in districts for e in d.events]
    ids = {e["id"] for e in events}
    group = await fresh_group(services, "pair")
    first = _consume_process(services, group)
    await asyncio.sleep(1.0)
    await publish_raw(services, events, "poller")
    second = _consume_process(services, group)  # joins mid-stream: a rebalance
    try:
        async with asyncio.timeout(180):
            while await settled_count(engine, ids) < len(ids):
                assert first.poll() is None and second.poll() is None
                await asyncio.sleep(0.2)
    finally:
        for proc in (first, second):
            proc.terminate()
        assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
    for district in districts:
        assert_matches(await snapshot(engine, district.id), oracle(district.events))
