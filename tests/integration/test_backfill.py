"""The backfill end to end: the simulator over HTTP, the real broker, database, consumer and relay.

- a simulated district backfilled into an empty database equals the simulator's truth;
- the mass-archive guard stops an archive over the share, `force` archives, a record shared again
  is restored by the next backfill;
- a student unshared at the source is archived by the next backfill and their open alert
  resolves;
- the archive step waits for an event received before the run that a consumer behind has not
  applied yet, then archives what it created (Clever's clock ahead of ours or not);
- a backfill interrupted mid-run and resumed publishes nothing twice downstream;
- the API's routes (202, 409, 404, GET) and `roster backfill` as a process (exit codes 0 and 3).
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.simulator import CleverSimulator, RunningSimulator, Size, serving
from schemas.roster_changes import CHANGES_TOPIC
from service.clever.client import CleverClient, new_http_client
from service.clever.tokens import Tokens
from service.db.driver_pool import DriverPool, driver_dsn
from service.db.uow import UnitOfWork
from service.kafka.gateway import KafkaGateway
from service.paths import project_root
from service.pull import backfills
from service.pull.backfill import BackfillResult, run_backfill
from service.settings import Settings
from service.webhooks.delivery import Delivery
from service.webhooks.ingest import Ingestor
from service.webhooks.parse import parse_body
from tests.integration.conftest import Api, api_settings, running_api
from tests.support.changes import read_cloudevents
from tests.support.pipeline import fresh_group, running_consumer, running_relay
from tests.support.services import Services
from tests.support.webhook import ADMIN_TOKEN

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
SIZE = Size(schools=4, students=60, sections=12)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Kit:
    services: Services
    engine: AsyncEngine
    sim: CleverSimulator
    running: RunningSimulator
    settings: Settings
    client: CleverClient
    ingestor: Ingestor
    api: Api


@pytest.fixture(scope="module")
async def kit(services: Services, engine: AsyncEngine) -> AsyncIterator[Kit]:
    sim = CleverSimulator(districts=7, size=SIZE)
    async with serving(sim) as running:
        # Small pages: every list takes several pages.
        settings = api_settings(services, **running.settings_values(), clever_page_limit=25)
        http = new_http_client(settings)
        tokens = Tokens(settings, http)
        await tokens.discover()
        client = CleverClient(settings, tokens, http=http, process_id="test-backfill")
        gateway = KafkaGateway(services.kafka_bootstrap)
        gateway.start()
        await asyncio.wait_for(gateway.connected.wait(), 60)
        pool = DriverPool(driver_dsn(services.database_url), size=3)
        ingestor = Ingestor(pool, gateway, timeout=10.0)
        group = await fresh_group(services, "backfill")
        try:
            async with (
                running_consumer(services, engine, group, max_batch=500),
                running_relay(services, engine),
                running_api(settings) as api,
            ):
                yield Kit(services, engine, sim, running, settings, client, ingestor, api)
        finally:
            await ingestor.drain()
            await gateway.stop()
            await pool.close()
            await http.aclose()


async def request(kit: Kit, district: str, reason: str = "api", **options: Any) -> str:
    async with UnitOfWork(kit.engine) as uow:
        row = await backfills.insert(uow.connection, district, reason=reason, **options)
        assert row is not None
        await uow.commit()
    return str(row["id"])


async def backfill(kit: Kit, district: str, reason: str = "api", **options: Any) -> BackfillResult:
    """Requests and runs one backfill of `district`, then waits until the consumer applied it."""
    backfill_id = await request(kit, district, reason, **options)
    result = await kit_run(kit, backfill_id)
    await caught_up(kit, district)
    return result


async def kit_run(
    kit: Kit, backfill_id: str, runner: str = "test-runner", **options: Any
) -> BackfillResult:
    """`run_backfill` with the kit's engine, client, ingestor and settings."""
    return await run_backfill(
        backfill_id,
        engine=kit.engine,
        client=kit.client,
        ingestor=kit.ingestor,
        settings=kit.settings,
        runner=runner,
        **options,
    )


async def caught_up(kit: Kit, district: str) -> None:
    """Every event of the district applied, and every downstream message relayed."""
    async with asyncio.timeout(90):
        while True:
            async with kit.engine.connect() as conn:
                waiting = await conn.scalar(
                    text(
                        "SELECT count(*) FROM event_log WHERE district_id = :d "
                        "AND status = 'accepted'"
                    ),
                    {"d": district},
                )
                unsent = await conn.scalar(
                    text("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL")
                )
            if not waiting and not unsent:
                return
            await asyncio.sleep(0.1)


async def get(kit: Kit, path: str) -> dict[str, Any]:
    response = await kit.api.client.get(path, headers=ADMIN)
    assert response.status_code == 200, (path, response.text)
    body: dict[str, Any] = response.json()
    return body


async def assert_equals_truth(kit: Kit, district: str) -> None:
    truth = kit.sim.truth(district)
    assert truth, "the simulated district has students"
    for student_id, expected in truth.items():
        response = await kit.api.client.get(f"/v1/students/{student_id}", headers=ADMIN)
        if expected.deleted and response.status_code == 404:
            continue  # gone at the source before the roster ever held it
        assert response.status_code == 200, (student_id, response.text)
        student = response.json()
        assert student["deleted"] == expected.deleted, student_id
        if not expected.deleted:
            assert student["school_ids"] == list(expected.schools), student_id
            assert student["section_ids"] == list(expected.sections), student_id
    for section in kit.sim.records(district, "sections"):
        stored = await get(kit, f"/v1/sections/{section['id']}")
        assert stored["student_ids"] == sorted(section["students"])
        assert stored["school_id"] == section["school"]
        assert stored["deleted"] is False


async def test_a_district_backfilled_into_an_empty_database_equals_the_simulators_truth(
    kit: Kit,
) -> None:
    district = kit.sim.district_ids[0]
    kit.sim.a_day_of_changes(district, 40)  # moves, deletes, unshares: truth is not the seed
    result = await backfill(kit, district)

    assert result.status == "succeeded", result.backfill
    users = kit.sim.records(district, "users")
    counts = result.backfill["counts"]
    assert counts["users"] == {"read": len(users), "published": len(users)}
    assert any(len(u["roles"]) > 1 for u in users), "the seed has users with several roles"
    for kind in ("schools", "terms", "courses", "sections"):
        n = len(kit.sim.records(district, kind))
        assert counts[kind] == {"read": n, "published": n}, kind
    assert counts["districts"] == {"read": 1, "published": 1}
    assert result.backfill["missing"] == dict.fromkeys(
        ("schools", "terms", "courses", "sections", "users"), 0
    )
    assert result.backfill["archived"] == {}
    assert result.backfill["start_event_id"] == kit.sim.newest_event_id(district)

    await assert_equals_truth(kit, district)
    async with kit.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT sync_state, cursor_event_id FROM sync_districts WHERE id = :d"),
                {"d": district},
            )
        ).one()
        sources = await conn.scalar(
            text("SELECT count(*) FROM event_log WHERE district_id = :d AND source <> 'backfill'"),
            {"d": district},
        )
    assert tuple(row) == ("polling", kit.sim.newest_event_id(district))
    assert sources == 0


async def test_the_guard_stops_a_mass_archive_force_archives_and_a_reshare_is_restored(
    kit: Kit,
) -> None:
    district = kit.sim.district_ids[1]
    assert (await backfill(kit, district)).status == "succeeded"
    live_users = len(kit.sim.records(district, "users"))
    students = [u["id"] for u in kit.sim.records(district, "users") if "student" in u["roles"]]
    gone = students[:10]  # over 5% of the district's users
    assert len(gone) > kit.settings.backfill_max_archive_share * live_users
    for student_id in gone:
        kit.sim.unshare(district, student_id)

    guarded = await backfill(kit, district)
    assert guarded.status == "guarded", guarded.backfill
    assert guarded.backfill["missing"]["users"] == len(gone)
    assert guarded.backfill["archived"] == {}
    for student_id in gone:
        assert (await get(kit, f"/v1/students/{student_id}"))["deleted"] is False

    forced = await backfill(kit, district, force=True)
    assert forced.status == "succeeded", forced.backfill
    assert forced.backfill["archived"] == {"users": len(gone)}
    await assert_equals_truth(kit, district)
    for student_id in gone:
        assert (await get(kit, f"/v1/students/{student_id}"))["deleted"] is True

    kit.sim.reshare(district, gone[0])
    again = await backfill(kit, district)
    assert again.status == "succeeded" and again.backfill["archived"] == {}
    assert (await get(kit, f"/v1/students/{gone[0]}"))["deleted"] is False
    await assert_equals_truth(kit, district)

    kit.sim.unshare(district, students[-1])
    skipped = await backfill(kit, district, archive_missing=False, force=True)
    assert skipped.status == "succeeded", skipped.backfill
    assert skipped.backfill["missing"]["users"] == 1 and skipped.backfill["archived"] == {}
    assert (await get(kit, f"/v1/students/{students[-1]}"))["deleted"] is False


async def test_a_student_unshared_is_archived_by_the_next_backfill_and_their_alert_resolves(
    kit: Kit,
) -> None:
    district = kit.sim.district_ids[2]
    body = {"program": "imagine_plus_assessment", "scope": "district", "scope_id": district}
    response = await kit.api.client.post("/v1/program-assignments", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert (await backfill(kit, district)).status == "succeeded"

    two_schools = sorted(s for s, t in kit.sim.truth(district).items() if len(t.schools) > 1)
    assert two_schools, "the seed puts some students in two schools"
    student_id = two_schools[0]
    opened = (await get(kit, f"/v1/alerts?student_id={student_id}"))["items"]
    assert [a["status"] for a in opened] == ["open"]

    before = await _downstream(kit, district)
    kit.sim.unshare(district, student_id)
    updated, renamed = [
        s for s, t in kit.sim.truth(district).items() if not t.deleted and s != student_id
    ][:2]
    kit.sim.update_student(district, updated)
    # A change at the stored last_modified (later created wins the tie): an object compared
    # whole, not judged by its time, so it is told downstream.
    users = kit.sim.records(district, "users")
    record = copy.deepcopy(next(u for u in users if u["id"] == renamed))
    record["name"]["first"] = "Renamed"
    event = {
        "id": uuid.uuid4().hex[:24],
        "type": "users.updated",
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {"object": record},
    }
    delivery = Delivery("webhook", uuid.uuid4().hex, TRACEPARENT, datetime.now(UTC))
    await kit.ingestor.ingest(parse_body(orjson.dumps(event), max_events=1), delivery)
    await caught_up(kit, district)
    assert (await get(kit, f"/v1/students/{renamed}"))["name"]["first"] == "Renamed"

    result = await backfill(kit, district, reason="cursor_refused")  # one the poller starts
    assert result.status == "succeeded", result.backfill
    assert result.backfill["archived"] == {"users": 1}
    assert (await get(kit, f"/v1/students/{student_id}"))["deleted"] is True
    after = (await get(kit, f"/v1/alerts?student_id={student_id}"))["items"]
    assert [(a["id"], a["status"]) for a in after] == [(opened[0]["id"], "resolved")]
    # The re-sync tells downstream what changed, and only that: every other record it sent again
    # is as stored (a re-sync must not re-announce the whole district). The renamed student is
    # told twice: renamed, then back as the sync has it.
    after_resync = await _downstream(kit, district)
    new = sorted(set(after_resync) - set(before))
    assert [(key, kind) for key, kind, _ in new] == sorted(
        [
            (student_id, "roster.student.deleted"),
            (updated, "roster.student.upserted"),
            (renamed, "roster.student.upserted"),
            (renamed, "roster.student.upserted"),
        ]
    )
    assert (await get(kit, f"/v1/students/{renamed}"))["name"]["first"] != "Renamed"

    # A backfill an operator asks for re-announces every record (downstream's way to recover).
    assert (await backfill(kit, district)).status == "succeeded"
    again = set(await _downstream(kit, district)) - set(after_resync)
    live = {s for s, t in kit.sim.truth(district).items() if not t.deleted}
    assert {key for key, kind, _ in again if kind == "roster.student.upserted"} == live


async def _downstream(kit: Kit, district: str) -> list[tuple[str, str, int]]:
    """The district's `roster.changes.v1` messages: (key, type, sequence)."""
    messages = await read_cloudevents(kit.services.kafka_bootstrap, CHANGES_TOPIC, district)
    return [(m.key, m.type, m.sequence) for m in messages]


async def test_the_archive_step_waits_for_an_earlier_event_a_consumer_behind_still_holds(
    kit: Kit,
) -> None:
    """A consumer behind: a student's event, received before the backfill, is still not applied
    when the run has read every list (the student was unshared meanwhile). A run allowed to wait
    1 s withholds the archive (guarded, cursor set); a run allowed longer waits until the event
    is applied, then archives the student. Clever's clock an hour ahead of ours (the event's
    time) does not make the archive stale; a second student, re-shared after the lists were
    read but before the archive step, is restored by Clever's re-share event arriving after the
    archive (the archive is dated when the list was read, not when it is published)."""
    district = kit.sim.district_ids[6]
    student, other = [u for u in kit.sim.records(district, "users") if "student" in u["roles"]][:2]
    events = []
    for user, created in (
        (student, datetime.now(UTC) + timedelta(hours=1)),  # Clever's clock an hour ahead
        (other, datetime.now(UTC) - timedelta(minutes=1)),
    ):
        events.append(
            {
                "id": uuid.uuid4().hex[:24],
                "type": "users.created",
                "created": created.isoformat().replace("+00:00", "Z"),
                "data": {"object": copy.deepcopy(user)},
            }
        )
        kit.sim.unshare(district, user["id"])
    async with kit.engine.connect() as hold:
        # The consumer stalls at its first write to `users` until this transaction ends.
        await hold.execute(text("LOCK TABLE users IN SHARE MODE"))
        for event in events:
            delivery = Delivery("webhook", uuid.uuid4().hex, TRACEPARENT, datetime.now(UTC))
            await kit.ingestor.ingest(parse_body(orjson.dumps(event), max_events=1), delivery)

        # Waiting longer than allowed: the archive is withheld, not the run failed (a failed run
        # keeps no cursor, so the next would publish the district again onto the backlog).
        withheld = await kit_run(
            kit,
            await request(kit, district),
            settle_seconds=1.0,
        )
        assert withheld.status == "guarded", withheld.backfill
        assert withheld.backfill["archived"] == {}
        assert "not applied" in withheld.backfill["error"]
        async with kit.engine.connect() as conn:
            cursor = await conn.scalar(
                text("SELECT cursor_event_id FROM sync_districts WHERE id = :d"), {"d": district}
            )
        assert cursor == kit.sim.newest_event_id(district)

        backfill_id = await request(kit, district)
        run = asyncio.create_task(kit_run(kit, backfill_id))
        listed = len(kit.sim.records(district, "users"))
        async with asyncio.timeout(60):
            while True:
                async with kit.engine.connect() as conn:
                    row = await backfills.get(conn, backfill_id)
                assert row is not None and not run.done(), run
                if row["counts"].get("users", {}).get("published") == listed:
                    break
                await asyncio.sleep(0.1)
        # Shared again after the users were listed, before the archive step: Clever's event
        # for it is newer than what the run saw, so the archive must not win over it.
        (reshared,) = kit.sim.reshare(district, other["id"]).event_ids
        await asyncio.sleep(1.5)  # the run would have archived by now, had it not waited
        assert not run.done(), "the archive step ran with an earlier event not applied"
        await hold.rollback()

    result = await asyncio.wait_for(run, 60)
    assert result.status == "succeeded", result.backfill
    assert result.backfill["archived"] == {"users": 2}
    # The re-share reaches the roster after the archive (as the poller would bring it).
    event = next(e for e in kit.sim.events(district) if e["id"] == reshared)
    delivery = Delivery("poller", uuid.uuid4().hex, TRACEPARENT, datetime.now(UTC))
    await kit.ingestor.ingest(parse_body(orjson.dumps(event), max_events=1), delivery)
    await caught_up(kit, district)
    assert (await get(kit, f"/v1/students/{student['id']}"))["deleted"] is True
    assert (await get(kit, f"/v1/students/{other['id']}"))["deleted"] is False
    await assert_equals_truth(kit, district)


async def test_an_interrupted_backfill_resumed_publishes_nothing_twice_downstream(
    kit: Kit,
) -> None:
    district = kit.sim.district_ids[3]
    backfill_id = await request(kit, district)
    # Slow pages and small chunks: the run is cancelled with some chunks published, some not.
    kit.sim.slow_pages(0.5, district_id=district, path="/v3.0/users")
    first = asyncio.create_task(
        kit_run(
            kit,
            backfill_id,
            runner="first-runner",
            chunk_events=20,
        )
    )
    async with asyncio.timeout(60):
        while await _published(kit, district) < 40:
            assert not first.done(), first
            await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    kit.sim.clear_faults()
    async with kit.engine.connect() as conn:
        row = await backfills.get(conn, backfill_id)
    assert row is not None and row["status"] == "running" and row["runner"] == "first-runner"
    start_event_id = row["start_event_id"]
    # The seeded feed is empty (None): the run stored that it read it, not only an id.
    assert start_event_id == kit.sim.newest_event_id(district)
    assert row["start_read_at"] is not None
    assert await _published(kit, district) < len(kit.sim.records(district, "users"))

    # The source changes before the run resumes: the resumed run keeps its start event, and the
    # changes reach the roster from the Events API after it (as the poller reads them).
    kit.sim.a_day_of_changes(district, 10)
    resumed = await kit_run(
        kit,
        backfill_id,
        runner="second-runner",
        stale_after=0.0,  # the first runner's heartbeat counts as stale at once
        chunk_events=20,
    )
    assert resumed.status == "succeeded", resumed.backfill
    assert resumed.backfill["start_event_id"] == start_event_id
    assert resumed.backfill["start_read_at"] == row["start_read_at"].isoformat()
    assert kit.sim.newest_event_id(district) not in (None, start_event_id)
    await poll_from(kit, district, start_event_id)
    await caught_up(kit, district)
    await assert_equals_truth(kit, district)

    async with kit.engine.connect() as conn:
        from_backfill = set(
            (
                await conn.execute(
                    text(
                        "SELECT event_id FROM event_log WHERE district_id = :d "
                        "AND source = 'backfill'"
                    ),
                    {"d": district},
                )
            ).scalars()
        )
    messages = await read_cloudevents(kit.services.kafka_bootstrap, CHANGES_TOPIC, district)
    by_key: dict[str, list[Any]] = defaultdict(list)
    for message in messages:
        by_key[message.key].append(message)
    assert len(by_key) > 100, "the backfill changed the roster"
    for key, keyed in by_key.items():
        assert sorted(m.sequence for m in keyed) == list(range(1, len(keyed) + 1)), key
        # A backfill writes each record of a district the roster did not hold once: a key
        # never gets two messages from it, however often the run was interrupted.
        caused = [m.type for m in keyed if m.data["source_event_id"] in from_backfill]
        assert len(caused) <= 1, (key, caused)


async def poll_from(kit: Kit, district: str, cursor: str | None) -> None:
    """Publishes the district's events after `cursor` as the poller does."""
    async for page in kit.client.events(district, cursor):
        if not page.records:
            break
        events = parse_body(page.body, max_events=10_000)
        delivery = Delivery("poller", uuid.uuid4().hex, TRACEPARENT, datetime.now(UTC))
        await kit.ingestor.ingest(events, delivery)


async def _published(kit: Kit, district: str) -> int:
    async with kit.engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM event_log WHERE district_id = :d AND source = 'backfill' "
                "AND type = 'users.updated'"
            ),
            {"d": district},
        )
    return int(count or 0)


async def test_the_routes_request_one_backfill_at_a_time_and_show_it(kit: Kit) -> None:
    client = kit.api.client
    known = kit.sim.district_ids[4]  # the API process has no token; a poller's row names one
    async with UnitOfWork(kit.engine) as uow:
        await uow.connection.execute(
            text("INSERT INTO sync_districts (id, token_source) VALUES (:d, 'discovered')"),
            {"d": known},
        )
        await uow.commit()

    assert (await client.post(f"/v1/districts/{known}/backfill")).status_code == 401
    unknown = uuid.uuid4().hex[:24]
    response = await client.post(f"/v1/districts/{unknown}/backfill", headers=ADMIN)
    assert response.status_code == 404
    bad = await client.post(
        f"/v1/districts/{known}/backfill", json={"archive": True}, headers=ADMIN
    )
    assert bad.status_code == 422

    created = await client.post(
        f"/v1/districts/{known}/backfill", json={"force": True}, headers=ADMIN
    )
    assert created.status_code == 202, created.text
    body = created.json()
    assert body["status"] == "running" and body["district_id"] == known
    assert (body["archive_missing"], body["force"], body["reason"]) == (True, True, "api")
    assert body["started_at"] is None and body["counts"] == {}

    again = await client.post(f"/v1/districts/{known}/backfill", headers=ADMIN)
    assert again.status_code == 409
    assert again.json()["backfill"]["id"] == body["id"]
    both = await asyncio.gather(
        *(client.post(f"/v1/districts/{known}/backfill", headers=ADMIN) for _ in range(5))
    )
    assert Counter(r.status_code for r in both) == {409: 5}

    shown = await client.get(f"/v1/backfills/{body['id']}", headers=ADMIN)
    assert shown.status_code == 200 and shown.json() == body
    assert (await client.get(f"/v1/backfills/{uuid.uuid4().hex}", headers=ADMIN)).status_code == (
        404
    )
    assert (await client.get(f"/v1/backfills/{body['id']}")).status_code == 401

    # A poller would run it; here the test does, and the route shows how it ended.
    result = await kit_run(kit, body["id"])
    assert result.status == "succeeded"
    ended = (await client.get(f"/v1/backfills/{body['id']}", headers=ADMIN)).json()
    assert ended["status"] == "succeeded" and ended["finished_at"] is not None
    assert set(ended["counts"]) >= {"districts", "schools", "users"}
    for kind_counts in ended["counts"].values():
        assert set(kind_counts) == {"read", "published", "invalid"}
    assert (await client.post(f"/v1/districts/{known}/backfill", headers=ADMIN)).status_code == 202
    async with UnitOfWork(kit.engine) as uow:  # leave nothing running behind
        await uow.connection.execute(
            text(
                "UPDATE backfills SET status = 'failed' "
                "WHERE district_id = :d AND status = 'running'"
            ),
            {"d": known},
        )
        await uow.commit()


async def test_a_district_token_given_to_the_api_is_enough_to_request_one(
    services: Services,
) -> None:
    district = uuid.uuid4().hex[:24]
    settings = api_settings(services, clever_district_tokens=f"{district}:a-token")
    async with running_api(settings) as api:
        response = await api.client.post(f"/v1/districts/{district}/backfill", headers=ADMIN)
        assert response.status_code == 202, response.text
        other = uuid.uuid4().hex[:24]
        missing = await api.client.post(f"/v1/districts/{other}/backfill", headers=ADMIN)
        assert missing.status_code == 404


async def _cli(kit: Kit, district: str, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ) | {
        "ROSTER_DATABASE_URL": kit.services.database_url,
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": kit.services.kafka_bootstrap,
        "ROSTER_LOG_LEVEL": "WARNING",
        "ROSTER_CLEVER_API_URL": kit.running.base_url,
        "ROSTER_CLEVER_OAUTH_URL": kit.running.base_url,
        "ROSTER_CLEVER_DISTRICT_TOKENS": f"{district}:{kit.sim.token(district)}",
        "ROSTER_CLEVER_PAGE_LIMIT": "25",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "backfill",
        district,
        *args,
        env=env,
        cwd=project_root(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_command_runs_a_backfill_itself_and_exits_by_its_status(kit: Kit) -> None:
    district = kit.sim.district_ids[5]
    code, out, err = await _cli(kit, district)
    assert code == 0, (out, err)
    assert "succeeded" in out
    await caught_up(kit, district)
    await assert_equals_truth(kit, district)
    async with kit.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT reason, runner, status FROM backfills WHERE district_id = :d "
                    "ORDER BY requested_at DESC LIMIT 1"
                ),
                {"d": district},
            )
        ).one()
        lease = await conn.scalar(
            text("SELECT lease_owner FROM sync_districts WHERE id = :d"), {"d": district}
        )
    assert row.reason == "cli" and row.runner.startswith("cli:") and row.status == "succeeded"
    assert lease is None  # let go at the end

    students = [u["id"] for u in kit.sim.records(district, "users") if "student" in u["roles"]]
    for student_id in students[:10]:
        kit.sim.unshare(district, student_id)
    code, out, err = await _cli(kit, district)
    assert code == 4, (out, err)
    assert "guarded" in out and "--force" in out
    code, out, err = await _cli(kit, district, "--force")
    assert code == 0, (out, err)
    assert "archived users 10" in out
