"""The Events API poller on the real broker and database, against the Clever simulator over HTTP:
events reach `applied`, the cursor moves only after Kafka acknowledged, one poller per district
(and a dead one's districts taken over), a revoked token, faults that lose nothing."""

from __future__ import annotations

import itertools
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.simulator import CleverSimulator, LoggedRequest, Size, serving
from schemas import kafka_headers as h
from service.kafka.config import producer_options
from service.kafka.topics import CLEVER_EVENTS, CLEVER_EVENTS_DLQ
from tests.integration.conftest import Api
from tests.support.pipeline import run_consumer, settled
from tests.support.polling import (
    cursor_at,
    lease_owners,
    logged_events,
    poll_process,
    polled,
    poller_settings,
    running_poller,
    sim_env,
    sync_row,
    wait_for,
)
from tests.support.services import Services
from tests.support.topic import read_topic
from tests.support.webhook import ADMIN_TOKEN

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
SMALL = Size(schools=3, students=12, sections=4)
TINY = Size(schools=1, students=2, sections=1)


def some_changes(sim: CleverSimulator, district_id: str, n: int) -> None:
    """`n` new students, each updated once (a tiny district cannot take a day of changes: it
    may run out of students or unshare its only school)."""
    for _ in range(n):
        student = sim.new_student(district_id).record_id
        sim.update_student(district_id, student)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_polled_district_reaches_applied_and_the_roster_equals_the_truth(
    services: Services, engine: AsyncEngine, api: Api
) -> None:
    # Seeded: the same day of changes on every run (the test session's database is fresh, and
    # no other test uses this seed, so its ids are new to it).
    sim = CleverSimulator(seed=1515, size=SMALL)
    (district,) = sim.district_ids
    async with serving(sim) as running:
        settings = poller_settings(services, running, clever_page_limit=7)
        async with running_poller(services, engine, settings) as polling:
            # First contact: backfilled (no events in the seeded feed), then polled.
            await wait_for(lambda: polled(engine, district), what="first backfill and poll")
            changes = sim.a_day_of_changes(district, 25)
            newest = sim.newest_event_id(district)
            await wait_for(lambda: cursor_at(engine, district, newest), what="cursor at newest")
            requests = [r for r in sim.requests if r.district_id == district]
    event_ids = {e["id"] for e in sim.events(district)}
    assert len(event_ids) >= len(changes)
    logged = await logged_events(engine, event_ids)
    assert set(logged) == event_ids
    assert {source for source, _ in logged.values()} == {"poller"}
    assert {r.process for r in requests} == {polling.id}  # X-Roster-Process: this poller

    # Every page as the webhook door publishes: key district, headers, source poller.
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, event_ids)
    assert sorted(p.event_id for p in published) == sorted(event_ids)  # each once
    for record in published:
        assert record.key == district.encode()
        assert record.headers[h.SOURCE] == "poller"
        assert record.headers[h.EVENT_TYPE] == orjson.loads(record.value)["type"]
        assert record.headers[h.TRACEPARENT].startswith("00-")
        assert record.headers["webhook-id"].startswith(f"poll:{district}:")

    group = f"roster-{uuid.uuid4().hex[:8]}"
    async with engine.connect() as conn:
        every = {
            row[0]
            for row in await conn.execute(
                text("SELECT event_id FROM event_log WHERE district_id = :d"), {"d": district}
            )
        }
    await run_consumer(services, engine, group, settled(engine, every))
    statuses = {status for _, status in (await logged_events(engine, event_ids)).values()}
    assert statuses <= {"applied", "stale"} and "applied" in statuses

    for student_id, truth in sim.truth(district).items():
        answer = (await api.client.get(f"/v1/students/{student_id}", headers=ADMIN)).json()
        assert answer["school_ids"] == list(truth.schools), student_id
        assert answer["section_ids"] == list(truth.sections), student_id
        assert answer["deleted"] == truth.deleted, student_id

    assert sample("roster_poller_events_pulled_total", district=district) >= len(event_ids)
    # The per-district gauges went with the lease at the orderly stop (the next holder reports).
    assert sample("roster_poller_last_success_timestamp_seconds", district=district) == 0.0
    listed = (await api.client.get("/v1/districts", headers=ADMIN)).json()["items"]
    (mine,) = [item for item in listed if item["id"] == district]
    assert mine["sync_state"] == "polling"
    assert mine["cursor_event_id"] == newest
    assert mine["token_source"] == "discovered"
    assert mine["name"] == sim.district(district).name
    assert mine["last_polled_at"] is not None and mine["last_event_at"] is not None
    assert mine["polled_by"] is None  # released at the orderly stop
    assert (await api.client.get("/v1/districts")).status_code == 401


async def test_the_cursor_stays_until_kafka_acknowledged_and_nothing_is_lost(
    services: Services, engine: AsyncEngine
) -> None:
    sim = CleverSimulator(size=TINY)
    (district,) = sim.district_ids
    async with serving(sim) as running:
        settings = poller_settings(services, running)
        async with running_poller(services, engine, settings):
            await wait_for(lambda: polled(engine, district), what="first backfill and poll")
        before = await sync_row(engine, district)
        assert before is not None
        some_changes(sim, district, 3)
        event_ids = {e["id"] for e in sim.events(district)}

        # A producer that was never started: Kafka acknowledges nothing.
        dead = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
        errors_before = sample(
            "roster_poller_errors_total", district=district, kind="kafka_unavailable"
        )
        quick = poller_settings(services, running, publish_timeout_seconds=0.5)
        async with running_poller(services, engine, quick, producer=dead):

            async def refused() -> bool:
                row = await sync_row(engine, district)
                return row is not None and row.last_error is not None

            await wait_for(refused, what="a failed publish recorded")
        row = await sync_row(engine, district)
        assert row is not None
        assert row.cursor_event_id == before.cursor_event_id  # not moved
        assert "kafka" in (row.last_error or "")
        assert await logged_events(engine, event_ids) == {}  # no dedupe record either
        assert (
            sample("roster_poller_errors_total", district=district, kind="kafka_unavailable")
            > errors_before
        )

        # With Kafka back, the next poller reads from the stored cursor: nothing lost.
        async with running_poller(services, engine, settings):
            newest = sim.newest_event_id(district)
            await wait_for(lambda: cursor_at(engine, district, newest), what="cursor at newest")
    assert set(await logged_events(engine, event_ids)) == event_ids
    row = await sync_row(engine, district)
    assert row is not None and row.last_error is None


async def test_a_poller_killed_after_the_ack_before_the_cursor_loses_and_doubles_nothing(
    services: Services, engine: AsyncEngine, tmp_path: Path
) -> None:
    """SIGKILLed mid-page (Kafka holds the page, the cursor does not move), then another
    poller re-reads the page: every event is in the topic exactly once."""
    sim = CleverSimulator(size=TINY)
    (district,) = sim.district_ids
    async with serving(sim) as running:
        env = sim_env(running, poll_interval_seconds=0.2, poll_lease_seconds=2)
        doomed = poll_process(
            services, env, tmp_path / "doomed.log", ROSTER_FAILPOINTS="poller.after_ingest"
        )
        try:
            await wait_for(lambda: polled(engine, district), what="first backfill and poll")
            start = await sync_row(engine, district)
            assert start is not None
            some_changes(sim, district, 3)
            event_ids = {e["id"] for e in sim.events(district)}

            async def killed() -> bool:
                return doomed.poll() is not None

            await wait_for(killed, what="the failpoint's SIGKILL")
            assert doomed.returncode == -signal.SIGKILL
        finally:
            if doomed.poll() is None:
                doomed.kill()
            doomed.wait()
        row = await sync_row(engine, district)
        assert row is not None and row.cursor_event_id == start.cursor_event_id
        assert set(await logged_events(engine, event_ids)) == event_ids  # Kafka held them

        async with running_poller(services, engine, poller_settings(services, running)):
            newest = sim.newest_event_id(district)
            await wait_for(lambda: cursor_at(engine, district, newest), what="the page read again")
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, event_ids)
    assert sorted(p.event_id for p in published) == sorted(event_ids)  # none twice


def _by_district(requests: list[LoggedRequest]) -> dict[str, list[LoggedRequest]]:
    """Each district's API requests, by start time."""
    by_district: dict[str, list[LoggedRequest]] = defaultdict(list)
    for r in sorted(requests, key=lambda r: r.started):
        if r.district_id is not None and r.path.startswith("/v3.0/"):
            by_district[r.district_id].append(r)
    return by_district


def _overlaps(requests: list[LoggedRequest]) -> list[tuple[LoggedRequest, LoggedRequest]]:
    """Pairs of one district's requests by two processes whose times overlap."""
    found = []
    for logged in _by_district(requests).values():
        for i, a in enumerate(logged):
            for b in logged[i + 1 :]:
                if b.started >= a.ended:
                    break
                if b.process != a.process:
                    found.append((a, b))
    return found


async def test_two_pollers_share_twenty_districts_one_each_and_a_killed_ones_are_taken_over(
    services: Services, engine: AsyncEngine, tmp_path: Path
) -> None:
    ttl = 2.0
    sim = CleverSimulator(districts=20, size=TINY)
    districts = sorted(sim.district_ids)
    async with serving(sim) as running:
        env = sim_env(running, poll_interval_seconds=0.3, poll_lease_seconds=ttl)
        first = poll_process(services, env, tmp_path / "first.log")
        second = None
        try:

            async def all_polled() -> bool:
                return all([await polled(engine, d) for d in districts])

            await wait_for(all_polled, timeout=120, what="20 districts backfilled and polled")
            second = poll_process(services, env, tmp_path / "second.log")

            async def shared() -> bool:
                owners = await lease_owners(engine, districts)
                held: dict[str, int] = defaultdict(int)
                for owner in owners.values():
                    if owner is not None:
                        held[owner.split(":")[1]] += 1
                return sorted(held.values()) == [10, 10]

            await wait_for(shared, what="a fair share of 10 each")
            for district in districts:  # each poller polls its ten
                sim.new_student(district)

            async def all_caught_up() -> bool:
                return all([await cursor_at(engine, d, sim.newest_event_id(d)) for d in districts])

            await wait_for(all_caught_up, what="every district polled while shared")
            owners = await lease_owners(engine, districts)
            doomed_pid = str(second.pid)
            theirs = sorted(d for d, o in owners.items() if o and o.split(":")[1] == doomed_pid)
            assert len(theirs) == 10
            second.send_signal(signal.SIGKILL)
            killed_at = time.time()
            second.wait()

            async def taken_over() -> bool:
                owners = await lease_owners(engine, districts)
                return all(
                    o is not None and o.split(":")[1] == str(first.pid) for o in owners.values()
                )

            await wait_for(taken_over, what="the dead poller's districts taken over")
            for district in theirs:  # and polled again by the survivor
                sim.new_student(district)

            async def caught_up() -> bool:
                return all([await cursor_at(engine, d, sim.newest_event_id(d)) for d in theirs])

            await wait_for(caught_up, what="the taken-over districts polled")
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in (first, second):
                if process is not None:
                    process.wait(timeout=30)
    requests = list(sim.requests)
    assert _overlaps(requests) == []  # one poller per district at a time
    # ... and handed over, never interleaved: at most first -> second (the fair share) and
    # second -> first (the takeover) per district.
    for district, logged in _by_district(requests).items():
        switches = sum(a.process != b.process for a, b in itertools.pairwise(logged))
        assert switches <= (2 if district in theirs else 0), [r.process for r in logged]
    processes = {r.process for r in requests if r.process}
    assert {p.split(":")[1] for p in processes} == {str(first.pid), str(second.pid)}
    # Takeover bound: ttl + ttl/3 after the death, plus a round's own time and the first
    # request's (given one more ttl: the machine is shared).
    for district in theirs:
        resumed = min(
            r.started
            for r in requests
            if r.district_id == district and r.started > killed_at and r.process
        )
        assert resumed - killed_at <= 2 * ttl + ttl / 3, (district, resumed - killed_at)


async def test_a_revoked_token_makes_its_district_token_invalid_and_the_others_go_on(
    services: Services, engine: AsyncEngine
) -> None:
    sim = CleverSimulator(districts=3, size=TINY)
    revoked, *others = sim.district_ids
    # A token given by hand that Clever never knew: its first backfill fails, once.
    bogus = uuid.uuid4().hex[:24]
    async with serving(sim) as running:
        settings = poller_settings(services, running, clever_district_tokens=f"{bogus}:not-a-token")
        async with running_poller(services, engine, settings):

            async def all_polled() -> bool:
                return all([await polled(engine, d) for d in sim.district_ids])

            await wait_for(all_polled, what="3 districts polled")
            row = await sync_row(engine, bogus)
            assert row is not None and row.sync_state == "token_invalid"
            assert row.token_source == "manual"
            before = sample("roster_poller_errors_total", district=revoked, kind="token_invalid")
            sim.new_student(revoked)
            sim.revoke_token(revoked)

            async def invalid() -> bool:
                row = await sync_row(engine, revoked)
                return row is not None and row.sync_state == "token_invalid"

            await wait_for(invalid, what="token_invalid")
            for district in others:
                some_changes(sim, district, 2)

            async def others_caught_up() -> bool:
                return all([await cursor_at(engine, d, sim.newest_event_id(d)) for d in others])

            await wait_for(others_caught_up, what="the other districts polled")
            row = await sync_row(engine, revoked)
            assert row is not None and row.sync_state == "token_invalid"
            assert "401" in (row.last_error or "")
            after = sample("roster_poller_errors_total", district=revoked, kind="token_invalid")
            assert after > before
            # Many poll intervals later, still the one failed backfill: it waits for the next
            # discovery, not for the interval.
            async with engine.connect() as conn:
                runs = await conn.scalar(
                    text("SELECT count(*) FROM backfills WHERE district_id = :d"), {"d": bogus}
                )
            assert runs == 1


@pytest.mark.parametrize("fault", ["rate_limit", "server_error", "timeout"])
async def test_429s_500s_and_timeouts_lose_nothing(
    services: Services, engine: AsyncEngine, fault: str
) -> None:
    sim = CleverSimulator(size=TINY)
    (district,) = sim.district_ids
    async with serving(sim) as running:
        settings = poller_settings(
            services, running, clever_page_limit=3, clever_timeout_seconds=0.5
        )
        async with running_poller(services, engine, settings):
            await wait_for(lambda: polled(engine, district), what="first backfill and poll")
            kind = "rate_limited" if fault == "rate_limit" else fault
            before = sample("roster_poller_errors_total", district=district, kind=kind)
            waits = sample("roster_poller_rate_limit_waits_total", district=district)
            if fault == "rate_limit":
                sim.rate_limit_burst(3, reset_in=0.5, path="/v3.0/events")
            elif fault == "server_error":
                sim.server_errors(3, path="/v3.0/events")
            else:
                sim.hang(2, seconds=5, path="/v3.0/events")
            some_changes(sim, district, 4)  # pages of three
            newest = sim.newest_event_id(district)
            await wait_for(lambda: cursor_at(engine, district, newest), what="cursor at newest")
            assert sample("roster_poller_errors_total", district=district, kind=kind) > before
            if fault == "rate_limit":
                assert sample("roster_poller_rate_limit_waits_total", district=district) > waits
    event_ids = {e["id"] for e in sim.events(district)}
    assert set(await logged_events(engine, event_ids)) == event_ids
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, event_ids)
    assert sorted(p.event_id for p in published) == sorted(event_ids)


async def test_an_invalid_event_goes_to_the_dead_letter_topic_and_the_rest_of_the_page_on(
    services: Services, engine: AsyncEngine
) -> None:
    sim = CleverSimulator(size=TINY)
    (district,) = sim.district_ids
    simulated = sim.district(district)
    async with serving(sim) as running:
        settings = poller_settings(services, running)
        async with running_poller(services, engine, settings):
            await wait_for(lambda: polled(engine, district), what="first backfill and poll")
            before = sample("roster_poller_errors_total", district=district, kind="invalid_event")
            sim.new_student(district)
            bad_id = sim.emitter.ids()
            at = sim.clock.tick()
            simulated.feed.append(
                {
                    "id": bad_id,
                    "type": "users.exploded",
                    "created": at.isoformat(),
                    "data": {"object": {"id": "x"}},
                },
                at,
            )
            sim.new_student(district)
            newest = sim.newest_event_id(district)
            await wait_for(lambda: cursor_at(engine, district, newest), what="cursor past it")
            assert (
                sample("roster_poller_errors_total", district=district, kind="invalid_event")
                == before + 1
            )
    good = {e["id"] for e in sim.events(district)} - {bad_id}
    assert set(await logged_events(engine, good)) == good
    assert await logged_events(engine, {bad_id}) == {}
    (dead,) = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS_DLQ.name, {bad_id})
    assert dead.key == district.encode()
    assert dead.headers[h.SOURCE] == "poller"
    assert dead.headers[h.EVENT_TYPE] == "users.exploded"
    assert "type" in dead.headers[h.DLQ_ERROR]
    assert orjson.loads(dead.value)["id"] == bad_id


def test_the_poller_idles_without_tokens(services: Services, tmp_path: Path) -> None:
    """`roster poll` with no token and no app credentials: it says so once and keeps running."""
    log = tmp_path / "idle.log"
    env = {"ROSTER_POLL_LEASE_SECONDS": "1"}
    process = poll_process(services, env, log)
    try:
        deadline = time.monotonic() + 60
        while "no Clever district tokens" not in log.read_text():
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(2)  # several lease rounds: still one line, still running
        assert process.poll() is None
        assert log.read_text().count("no Clever district tokens") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
