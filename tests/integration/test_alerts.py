"""Programs and the single-school rule end to end, on the real broker and database."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.roster_alerts import ALERT_MESSAGE_TYPES, ALERTS_TOPIC
from service.db.engine import make_engine
from service.db.migrate import upgrade
from tests.integration.conftest import Api
from tests.support.changes import read_cloudevents
from tests.support.district import generate
from tests.support.factory import Factory
from tests.support.pipeline import (
    fresh_group,
    publish_raw,
    roster_process,
    run_consumer,
    running_consumer,
    running_relay,
    settled,
    settled_count,
)
from tests.support.services import Services, create_database, drop_database
from tests.support.webhook import ADMIN_TOKEN

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@asynccontextmanager
async def consuming(services: Services, engine: AsyncEngine) -> AsyncIterator[None]:
    """A consumer (fresh group) running in the background for the whole scenario."""
    group = await fresh_group(services, "alerts")
    async with running_consumer(services, engine, group, max_batch=500):
        yield


class Scenario:
    def __init__(self, services: Services, engine: AsyncEngine, api: Api) -> None:
        self.services, self.engine, self.api = services, engine, api
        self.factory = Factory()
        self.district = self.factory.oid()

    def event(self, kind: str, obj: dict[str, Any], action: str = "updated") -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["last_modified"] = self.factory.tick()
        return self.factory.event(f"{kind}.{action}", self.district, obj)

    async def send(self, *events: dict[str, Any]) -> None:
        await publish_raw(self.services, list(events), "poller")
        ids = {e["id"] for e in events}
        async with asyncio.timeout(60):
            while await settled_count(self.engine, ids) < len(ids):  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    async def alerts(self, student: str) -> list[dict[str, Any]]:
        response = await self.api.client.get(
            "/v1/alerts", params={"student_id": student}, headers=ADMIN
        )
        assert response.status_code == 200
        return sorted(response.json()["items"], key=lambda a: a["opened_at"])


async def test_the_single_school_scenario_end_to_end(
    services: Services, engine: AsyncEngine, api: Api
) -> None:
    s = Scenario(services, engine, api)
    f = s.factory
    district = f.obj("districts", s.district)
    school_a, school_b, school_c = (f.obj("schools", s.district) for _ in range(3))
    for school, name in ((school_a, "Adams"), (school_b, "Burr"), (school_c, "Clay")):
        school["name"] = name
    a, b, c = school_a["id"], school_b["id"], school_c["id"]
    student = f.obj("users", s.district)
    student["roles"]["student"].update(school=a, schools=[a], enrollments=[])
    sid = student["id"]
    in_b, in_c = f.obj("sections", s.district), f.obj("sections", s.district)
    in_b.update(school=b, students=[])
    in_c.update(school=c, students=[])
    bystander = f.obj("users", s.district)  # two schools, but only a program without the rule
    bystander["roles"]["student"].update(school=b, schools=[b, c], enrollments=[])

    async with consuming(services, engine), running_relay(services, engine):
        await s.send(
            s.event("districts", district, "created"),
            *(s.event("schools", x, "created") for x in (school_a, school_b, school_c)),
            s.event("users", student, "created"),
            s.event("users", bystander, "created"),
            s.event("sections", in_b, "created"),
            s.event("sections", in_c, "created"),
        )
        # Catalog and assignments: validation, idempotence.
        catalog = (await api.client.get("/v1/programs", headers=ADMIN)).json()
        assert {p["code"]: p["single_school"] for p in catalog}["mypath_math"] is True
        bad = await api.client.post(
            "/v1/program-assignments",
            json={"program": "nope", "scope": "school", "scope_id": a},
            headers=ADMIN,
        )
        assert bad.status_code == 400 and "unknown program 'nope'" in bad.json()["detail"]
        bad_scope = await api.client.post(
            "/v1/program-assignments",
            json={"program": "mypath_math", "scope": "planet", "scope_id": a},
            headers=ADMIN,
        )
        assert bad_scope.status_code == 422 and "scope" in str(bad_scope.json()["detail"])
        body = {"program": "mypath_math", "scope": "school", "scope_id": a}
        created = await api.client.post("/v1/program-assignments", json=body, headers=ADMIN)
        assert created.status_code == 201
        # The school has one student, re-checked: one school, so no alert.
        assert created.json()["students_rechecked"] == 1 and created.json()["alert_changes"] == 0
        again = await api.client.post("/v1/program-assignments", json=body, headers=ADMIN)
        assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
        assignment = created.json()["id"]
        facts = await api.client.post(
            "/v1/program-assignments",
            json={"program": "imagine_math_facts", "scope": "district", "scope_id": s.district},
            headers=ADMIN,
        )
        assert facts.status_code == 201
        assert await s.alerts(sid) == []  # one school: no conflict

        # Joining a section at B: one open alert naming both schools.
        join_b = s.event("sections", in_b | {"students": [sid]})
        await s.send(join_b)
        (alert,) = await s.alerts(sid)
        assert alert["status"] == "open" and alert["type"] == "multi_school_enrollment"
        assert alert["school_ids"] == sorted([a, b]) and alert["programs"] == ["mypath_math"]
        assert alert["trigger_event_id"] == join_b["id"]
        detail = alert["detail"]
        assert {x["id"]: x["name"] for x in detail["schools"]} == {a: "Adams", b: "Burr"}
        assert detail["suggested_school_id"] == a  # Clever's primary school
        assert detail["programs"][0]["sources"] == [
            {"assignment_id": assignment, "scope": "school", "scope_id": a}
        ]
        assert detail["student"]["name"]["last"] == "Lovelace"
        student_view = (await api.client.get(f"/v1/students/{sid}", headers=ADMIN)).json()
        assert student_view["programs"] == ["imagine_math_facts", "mypath_math"]

        # More events while in conflict: the same alert is updated, never a second one.
        await s.send(s.event("sections", in_c | {"students": [sid]}))
        await s.send(s.event("users", student | {"name": {"first": "Ada", "last": "Byron"}}))
        (alert,) = await s.alerts(sid)
        assert alert["status"] == "open" and alert["school_ids"] == sorted([a, b, c])

        # Leaving B and C resolves it by itself.
        await s.send(
            s.event("sections", in_b | {"students": []}),
            s.event("sections", in_c | {"students": []}),
        )
        (alert,) = await s.alerts(sid)
        assert alert["status"] == "resolved" and alert["resolved_at"] is not None

        # Coming back opens a new alert; acknowledging it; removing the program resolves it.
        await s.send(s.event("sections", in_b | {"students": [sid]}))
        first, second = await s.alerts(sid)
        assert first["id"] == alert["id"] and second["status"] == "open"
        ack = await api.client.post(f"/v1/alerts/{second['id']}/acknowledge", headers=ADMIN)
        assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
        resolved_ack = await api.client.post(f"/v1/alerts/{first['id']}/acknowledge", headers=ADMIN)
        assert resolved_ack.status_code == 409
        missing = await api.client.post("/v1/alerts/nope/acknowledge", headers=ADMIN)
        assert missing.status_code == 404
        metrics = (await api.client.get("/metrics")).text
        assert (
            f'roster_alerts_open{{district_id="{s.district}",status="acknowledged"}} 1.0' in metrics
        )
        deleted = await api.client.delete(f"/v1/program-assignments/{assignment}", headers=ADMIN)
        assert deleted.status_code == 204
        assert (
            await api.client.delete(f"/v1/program-assignments/{assignment}", headers=ADMIN)
        ).status_code == 404
        statuses = [x["status"] for x in await s.alerts(sid)]
        assert statuses == ["resolved", "resolved"]
        one = (await api.client.get(f"/v1/alerts/{first['id']}", headers=ADMIN)).json()
        assert [(h["action"], len(h["school_ids"])) for h in one["history"]] == [
            ("opened", 2),
            ("updated", 3),
            ("updated", 2),
            ("resolved", 2),
        ]
        assert one["history"][0]["trigger_event_id"] == join_b["id"]
        two = (await api.client.get(f"/v1/alerts/{second['id']}", headers=ADMIN)).json()
        assert [h["action"] for h in two["history"]] == ["opened", "acknowledged", "resolved"]
        assert two["history"][-1]["trigger_event_id"] == f"assignment:{assignment}"
        assert (await api.client.get("/v1/alerts/nope", headers=ADMIN)).status_code == 404
        assert await s.alerts(bystander["id"]) == []  # a program without the rule never alerts
        by_district = await api.client.get(
            "/v1/alerts", params={"district_id": s.district, "status": "resolved"}, headers=ADMIN
        )
        assert len(by_district.json()["items"]) == 2

        async with asyncio.timeout(30):
            while await _unsent(engine):  # noqa: ASYNC110 (polling the database)
                await asyncio.sleep(0.05)
    messages = [
        m
        for m in await read_cloudevents(services.kafka_bootstrap, ALERTS_TOPIC, s.district)
        if m.key == sid
    ]
    assert [m.type for m in messages] == [
        "alert.opened",
        "alert.updated",  # joined C
        "alert.updated",  # left B (per event, though the same batch...)
        "alert.resolved",  # ...left C
        "alert.opened",
        "alert.acknowledged",
        "alert.resolved",
    ]
    assert [m.sequence for m in messages] == list(range(1, 8))
    for m in messages:
        ALERT_MESSAGE_TYPES[m.type].model_validate(m.data)
    assert messages[-1].data["trigger_event_id"] == f"assignment:{assignment}"


async def _unsent(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
    return int(count or 0)


async def _alert_summary(engine: AsyncEngine, district: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        alerts = (
            await conn.execute(
                text(
                    "SELECT student_id, status, school_ids, trigger_event_id FROM alerts "
                    "WHERE district_id = :d"
                ),
                {"d": district},
            )
        ).all()
        history = (
            await conn.execute(
                text(
                    "SELECT a.student_id, h.action, h.trigger_event_id, h.school_ids "
                    "FROM alert_history h JOIN alerts a ON a.id = h.alert_id "
                    "WHERE a.district_id = :d"
                ),
                {"d": district},
            )
        ).all()
    return {
        "alerts": Counter((r[0], r[1], tuple(r[2]), r[3]) for r in alerts),
        "history": Counter((r[0], r[1], r[2], tuple(r[3])) for r in history),
    }


async def test_replay_into_a_fresh_database_yields_the_same_alerts(
    services: Services, engine: AsyncEngine, api: Api
) -> None:
    district = generate(Factory(), students=30, sections=8, changes=300)
    body = {"program": "mypath_reading", "scope": "district", "scope_id": district.id}
    assert (
        await api.client.post("/v1/program-assignments", json=body, headers=ADMIN)
    ).status_code == 201
    # Small batches here, one big backlog there: the alerts must not depend on batching.
    group = await fresh_group(services, "live")
    await publish_raw(services, district.events, "poller")
    ids = {e["id"] for e in district.events}
    await run_consumer(services, engine, group, settled(engine, ids), max_batch=7)
    original = await _alert_summary(engine, district.id)
    assert sum(original["alerts"].values()) > 0, "the stream should cause some conflicts"

    name = f"roster_replay_{uuid.uuid4().hex[:8]}"
    url = await asyncio.to_thread(create_database, services.database_url, name)
    try:
        await asyncio.to_thread(upgrade, url)
        fresh = make_engine(url, pool_size=2)
        try:
            async with fresh.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO program_assignments (id, program, scope, scope_id) "
                        "VALUES ('replayed', :program, :scope, :scope_id)"
                    ),
                    body,
                )
            await run_consumer(
                services,
                fresh,
                f"replay-{uuid.uuid4().hex[:8]}",
                settled(fresh, ids),
                timeout=180,
                max_batch=2000,
            )
            replayed = await _alert_summary(fresh, district.id)
        finally:
            await fresh.dispose()
    finally:
        await asyncio.to_thread(drop_database, services.database_url, name)
    assert replayed == original


def _consume_process(services: Services, group: str) -> subprocess.Popen[bytes]:
    return roster_process(
        services, "consume", ROSTER_CONSUMER_GROUP=group, ROSTER_CONSUMER_MAX_BATCH="200"
    )


async def test_a_burst_of_section_changes_under_two_consumers_never_doubles_an_alert(
    services: Services, engine: AsyncEngine, api: Api
) -> None:
    f = Factory()
    district = f.oid()
    schools = [f.obj("schools", district) for _ in range(4)]
    students = []
    for i in range(200):
        user = f.obj("users", district)
        home = schools[i % 4]["id"]
        user["roles"]["student"].update(school=home, schools=[home], enrollments=[])
        students.append(user)
    sections = []
    for i in range(50):
        section = f.obj("sections", district)
        section.update(school=schools[i % 4]["id"], students=[])
        sections.append(section)
    setup = [f.event("schools.created", district, x) for x in schools]
    setup += [f.event("users.created", district, x) for x in students]
    setup += [f.event("sections.created", district, x) for x in sections]
    burst = []
    for _ in range(10_000):
        section = copy.deepcopy(f.rng.choice(sections))
        section["students"] = [u["id"] for u in f.rng.sample(students, f.rng.randint(3, 20))]
        section["last_modified"] = f.tick()
        burst.append(f.event("sections.updated", district, section))
    body = {"program": "imagine_purpose", "scope": "district", "scope_id": district}
    assert (
        await api.client.post("/v1/program-assignments", json=body, headers=ADMIN)
    ).status_code == 201

    ids = {e["id"] for e in setup + burst}
    group = await fresh_group(services, "burst")
    first = _consume_process(services, group)
    await publish_raw(services, setup + burst, "poller")
    second = _consume_process(services, group)
    try:
        async with asyncio.timeout(300):
            while await settled_count(engine, ids) < len(ids):
                assert first.poll() is None and second.poll() is None
                await asyncio.sleep(0.5)
    finally:
        for proc in (first, second):
            proc.terminate()
        assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0

    async with engine.connect() as conn:
        dead = await conn.scalar(
            text(
                "SELECT count(*) FROM event_log WHERE event_id = ANY(:ids) "
                "AND status = 'dead_lettered'"
            ),
            {"ids": list(ids)},
        )
        active = (
            await conn.execute(
                text(
                    "SELECT student_id, count(*) FROM alerts WHERE district_id = :d "
                    "AND status <> 'resolved' GROUP BY student_id"
                ),
                {"d": district},
            )
        ).all()
        total = await conn.scalar(
            text("SELECT count(*) FROM alerts WHERE district_id = :d"), {"d": district}
        )
        # The burst's downstream messages (well over 100,000 enrollment changes) are not this
        # test's subject; left unsent they would make every later relay test drain them first.
        await conn.execute(text("DELETE FROM outbox WHERE district_id = :d"), {"d": district})
        await conn.commit()
    assert dead == 0
    assert all(count == 1 for _, count in active)
    assert total and total > len(active)  # the burst opened and resolved many
    # Exactly the students in conflict now have an unresolved alert.
    in_conflict = set()
    for user in students:
        view = (await api.client.get(f"/v1/students/{user['id']}", headers=ADMIN)).json()
        if len(view["school_ids"]) >= 2:
            in_conflict.add(user["id"])
    assert {student for student, _ in active} == in_conflict


async def test_deleting_a_school_resolves_its_students_alerts_and_restoring_it_reopens(
    services: Services, engine: AsyncEngine, api: Api
) -> None:
    s = Scenario(services, engine, api)
    f = s.factory
    school_a, school_b = f.obj("schools", s.district), f.obj("schools", s.district)
    a, b = school_a["id"], school_b["id"]
    student = f.obj("users", s.district)
    student["roles"]["student"].update(school=a, schools=[a, b], enrollments=[])
    body = {"program": "imagine_purpose", "scope": "school", "scope_id": a}
    assert (
        await api.client.post("/v1/program-assignments", json=body, headers=ADMIN)
    ).status_code == 201
    async with consuming(services, engine):
        await s.send(
            s.event("schools", school_a, "created"),
            s.event("schools", school_b, "created"),
            s.event("users", student, "created"),
        )
        assert [x["status"] for x in await s.alerts(student["id"])] == ["open"]
        await s.send(s.event("schools", school_b | {"name": "Renamed"}))  # not a deletion
        assert [x["status"] for x in await s.alerts(student["id"])] == ["open"]
        gone = s.event("schools", school_b, "deleted")
        await s.send(gone)
        (alert,) = await s.alerts(student["id"])
        assert alert["status"] == "resolved" and alert["trigger_event_id"] == gone["id"]
        await s.send(s.event("schools", school_b, "created"))  # shared again
        assert [x["status"] for x in await s.alerts(student["id"])] == ["resolved", "open"]
