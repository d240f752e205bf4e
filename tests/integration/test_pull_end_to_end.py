"""The pull doors end to end, as deployed: `roster poll` processes against the Clever simulator
over HTTP, with the real broker, database, consumer, relay and API.

- a district backfilled into an empty database, then polled through a day of changes under
  injected faults (429s, 500s, a page that hangs past the client's timeout, slow pages) and a
  poller SIGKILLed mid-page then replaced, equals the simulator's truth: every student's schools,
  sections, programs and deleted flag, and the open alerts are the single-school rule applied to
  that truth; downstream, each key's sequences in `roster.changes.v1` are complete;
- a cursor Clever no longer has (the feed expired past 30 days) starts a backfill by itself.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.simulator import CleverSimulator, Size, serving
from schemas.roster_changes import CHANGES_TOPIC
from tests.integration.conftest import Api
from tests.support.changes import read_cloudevents
from tests.support.pipeline import fresh_group, running_consumer, running_relay
from tests.support.polling import (
    cursor_at,
    poll_process,
    polled,
    poller_settings,
    running_poller,
    sim_env,
    sync_row,
    wait_for,
)
from tests.support.services import Services
from tests.support.webhook import ADMIN_TOKEN

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
SIZE = Size(schools=4, students=60, sections=12, two_school_share=0.15)
SINGLE_SCHOOL = "mypath_math"  # granted to one school
EVERYONE = "imagine_math_facts"  # granted to the district; not a single-school program


async def _assign(api: Api, program: str, scope: str, scope_id: str) -> None:
    body = {"program": program, "scope": scope, "scope_id": scope_id}
    answer = await api.client.post("/v1/program-assignments", json=body, headers=ADMIN)
    assert answer.status_code in (200, 201), answer.text


async def _caught_up(engine: AsyncEngine, district: str) -> bool:
    """Every event of the district settled, and every downstream message relayed."""
    async with engine.connect() as conn:
        waiting = await conn.scalar(
            text("SELECT count(*) FROM event_log WHERE district_id = :d AND status = 'accepted'"),
            {"d": district},
        )
        unsent = await conn.scalar(
            text(
                "SELECT count(*) FROM outbox WHERE district_id = :d "
                "AND sent_at IS NULL AND parked_at IS NULL"
            ),
            {"d": district},
        )
    return not waiting and not unsent


async def _assert_roster_is_the_truth(
    api: Api, sim: CleverSimulator, district: str, granted_school: str
) -> None:
    """Students as the simulator holds them, and the alerts the rule gives for that truth."""
    truth = sim.truth(district)
    in_conflict: dict[str, list[str]] = {}
    for student_id, expected in truth.items():
        answer = await api.client.get(f"/v1/students/{student_id}", headers=ADMIN)
        if expected.deleted and answer.status_code == 404:
            continue  # gone at the source before the roster ever held it
        assert answer.status_code == 200, (student_id, answer.text)
        student = answer.json()
        assert student["deleted"] == expected.deleted, student_id
        if expected.deleted:
            continue
        assert student["school_ids"] == list(expected.schools), student_id
        assert student["section_ids"] == list(expected.sections), student_id
        programs = {EVERYONE} | ({SINGLE_SCHOOL} if granted_school in expected.schools else set())
        assert student["programs"] == sorted(programs), student_id
        if SINGLE_SCHOOL in programs and len(expected.schools) >= 2:
            in_conflict[student_id] = list(expected.schools)
    assert in_conflict, "the day should leave some granted students in two schools"

    answer = await api.client.get(
        "/v1/alerts", params={"district_id": district, "status": "open"}, headers=ADMIN
    )
    opened = answer.json()["items"]
    assert sorted(a["student_id"] for a in opened) == sorted(in_conflict)  # one each
    for alert in opened:
        assert alert["type"] == "multi_school_enrollment"
        assert alert["school_ids"] == in_conflict[alert["student_id"]]
        assert alert["programs"] == [SINGLE_SCHOOL]


async def _assert_sequences_complete(services: Services, district: str) -> None:
    """Per key, downstream sequences 1..n: none missing, none twice."""
    sequences: dict[str, list[int]] = defaultdict(list)
    for message in await read_cloudevents(services.kafka_bootstrap, CHANGES_TOPIC, district):
        sequences[message.key].append(message.sequence)
    assert sequences
    broken = {k: s for k, s in sequences.items() if sorted(s) != list(range(1, len(s) + 1))}
    assert not broken


def _day(sim: CleverSimulator, district: str, n: int) -> None:
    sim.a_day_of_changes(district, n)


async def _simulated_district(api: Api) -> tuple[CleverSimulator, str, str]:
    """A simulated district with a program for everyone in it and a single-school program for
    one of its schools: the simulator, the district and that school."""
    sim = CleverSimulator(size=SIZE)
    (district,) = sim.district_ids
    granted_school = sim.records(district, "schools")[0]["id"]
    await _assign(api, EVERYONE, "district", district)
    await _assign(api, SINGLE_SCHOOL, "school", granted_school)
    return sim, district, granted_school


async def test_a_backfilled_then_polled_district_under_faults_and_a_kill_equals_the_truth(
    services: Services, engine: AsyncEngine, api: Api, tmp_path: Path
) -> None:
    sim, district, granted_school = await _simulated_district(api)
    group = await fresh_group(services, "e2e")
    async with (
        serving(sim) as running,
        running_consumer(services, engine, group, max_batch=500),
        running_relay(services, engine),
    ):
        env = sim_env(
            running,
            poll_interval_seconds=0.2,
            poll_lease_seconds=2,
            clever_timeout_seconds=1.5,
            clever_page_limit=7,  # every list and every day's feed takes several pages
        )
        first = poll_process(services, env, tmp_path / "first.log")
        second: subprocess.Popen[bytes] | None = None
        try:
            await wait_for(lambda: polled(engine, district), what="the first backfill and poll")
            # A day of changes while Clever misbehaves: each fault once or a few times.
            sim.rate_limit_burst(3, reset_in=0.5, district_id=district)
            sim.server_errors(3, district_id=district)
            sim.hang(1, district_id=district, path="/v3.0/events")
            _day(sim, district, 40)
            await wait_for(
                lambda: cursor_at(engine, district, sim.newest_event_id(district)),
                timeout=90,
                what="the first half of the day polled",
            )
            # Killed mid-page: its next pages are slow, and it dies while reading one.
            sim.slow_pages(1.0, count=4, district_id=district, path="/v3.0/events")
            _day(sim, district, 40)
            await asyncio.sleep(1.5)
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
            _day(sim, district, 20)
            second = poll_process(services, env, tmp_path / "second.log")
            await wait_for(
                lambda: cursor_at(engine, district, sim.newest_event_id(district)),
                timeout=90,
                what="the day polled to its end by the second poller",
            )
            await wait_for(lambda: _caught_up(engine, district), what="applied and relayed")
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)
        await _assert_roster_is_the_truth(api, sim, district, granted_school)
    await _assert_sequences_complete(services, district)


async def _backfills(engine: AsyncEngine, district: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT reason, status, start_event_id FROM backfills WHERE district_id = :d "
                "ORDER BY requested_at"
            ),
            {"d": district},
        )
        return [dict(r._mapping) for r in rows]


async def test_a_cursor_clever_no_longer_has_starts_a_backfill_by_itself(
    services: Services, engine: AsyncEngine, api: Api
) -> None:
    sim, district, granted_school = await _simulated_district(api)
    group = await fresh_group(services, "expired")
    async with (
        serving(sim) as running,
        running_consumer(services, engine, group, max_batch=500),
        running_relay(services, engine),
    ):
        settings = poller_settings(services, running)
        async with running_poller(services, engine, settings):
            await wait_for(lambda: polled(engine, district), what="the first backfill and poll")
            _day(sim, district, 10)
            await wait_for(
                lambda: cursor_at(engine, district, sim.newest_event_id(district)),
                what="the day polled",
            )
        # Offline for 31 days: the feed Clever keeps no longer holds the stored cursor.
        sim.advance_clock(timedelta(days=31))
        _day(sim, district, 10)
        assert sim.expire_events() > 0
        stale = await sync_row(engine, district)
        assert stale is not None and stale.cursor_event_id is not None
        assert stale.cursor_event_id not in {e["id"] for e in sim.events(district)}

        async with running_poller(services, engine, settings):
            await wait_for(
                lambda: cursor_at(engine, district, sim.newest_event_id(district)),
                timeout=90,
                what="a backfill, then the feed polled again",
            )
            await wait_for(lambda: _caught_up(engine, district), what="applied and relayed")
        runs = await _backfills(engine, district)
        assert [(r["reason"], r["status"]) for r in runs] == [
            ("first_contact", "succeeded"),
            ("cursor_refused", "succeeded"),
        ]
        await _assert_roster_is_the_truth(api, sim, district, granted_school)
    await _assert_sequences_complete(services, district)
