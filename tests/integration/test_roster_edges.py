"""Edges of the roster rules on the real broker and database: a record shared again after its
delete, a user losing a role, a zombie batch, and assignment locks scoped by district."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.roster import RosterApplier
from service.db.tables import event_log
from service.db.uow import UnitOfWork
from service.programs.assignments import add_assignment
from tests.integration.conftest import Api
from tests.integration.test_alerts import ADMIN, Scenario, consuming
from tests.support.factory import Factory
from tests.support.pipeline import NoDeadLetters, as_records
from tests.support.services import Services


async def _messages(engine: AsyncEngine, key: str) -> list[str]:
    """The downstream message types of one key, in sequence order (from the outbox)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT type FROM outbox WHERE message_key = :k AND topic = 'roster.changes.v1' "
                "ORDER BY sequence"
            ),
            {"k": key},
        )
        return [r[0] for r in rows]


async def _assign(api: Api, program: str, scope: str, scope_id: str) -> None:
    body = {"program": program, "scope": scope, "scope_id": scope_id}
    response = await api.client.post("/v1/program-assignments", json=body, headers=ADMIN)
    assert response.status_code == 201


async def test_a_record_shared_again_after_its_delete_comes_back(
    services: Services, engine: AsyncEngine, api: Api
) -> None:
    """Clever re-shares a record as `*.created` with the `last_modified` it had when it was
    deleted: the later event wins, so the record, its memberships, its alert and its downstream
    messages come back (item 1)."""
    s = Scenario(services, engine, api)
    f = s.factory
    school_a, school_b = f.obj("schools", s.district), f.obj("schools", s.district)
    a, b = school_a["id"], school_b["id"]
    student = f.obj("users", s.district)
    student["roles"]["student"].update(school=a, schools=[a], enrollments=[])
    section = f.obj("sections", s.district)
    section.update(school=b, students=[student["id"]])
    await _assign(api, "mypath_math", "district", s.district)

    def same_version(kind: str, obj: dict[str, Any], action: str) -> dict[str, Any]:
        return f.event(f"{kind}.{action}", s.district, copy.deepcopy(obj))

    user_created = s.event("users", student, "created")
    section_created = s.event("sections", section, "created")
    section = section_created["data"]["object"]  # as stored, with its last_modified
    async with consuming(services, engine):
        await s.send(
            s.event("schools", school_a, "created"),
            s.event("schools", school_b, "created"),
            user_created,
        )
        await s.send(section_created)
        (alert,) = await s.alerts(student["id"])
        assert alert["status"] == "open"

        # Unshared, then shared again with the same last_modified: one event after the other.
        await s.send(same_version("sections", section, "deleted"))
        assert (await _section(api, section["id"]))["deleted"] is True
        assert [x["status"] for x in await s.alerts(student["id"])] == ["resolved"]
        reshared = same_version("sections", section, "created")
        await s.send(reshared)
        assert await _status(engine, reshared["id"]) == "applied"
        back = await _section(api, section["id"])
        assert back["deleted"] is False and back["student_ids"] == [student["id"]]
        assert [x["status"] for x in await s.alerts(student["id"])] == ["resolved", "open"]

        # The same for a user, deleted and shared again.
        stored_user = user_created["data"]["object"]
        await s.send(same_version("users", stored_user, "deleted"))
        assert (await _student(api, student["id"]))["deleted"] is True
        await s.send(same_version("users", stored_user, "created"))
        assert (await _student(api, student["id"]))["deleted"] is False
        statuses = [x["status"] for x in await s.alerts(student["id"])]
        assert statuses == ["resolved", "resolved", "open"]

    assert (await _messages(engine, section["id"]))[-2:] == [
        "roster.section.deleted",
        "roster.section.upserted",
    ]
    enrollment = await _messages(engine, f"{section['id']}:{student['id']}")
    assert enrollment == [
        "roster.enrollment.added",
        "roster.enrollment.removed",
        "roster.enrollment.added",
    ]
    assert (await _messages(engine, student["id"]))[-2:] == [
        "roster.student.deleted",
        "roster.student.upserted",
    ]


async def test_a_user_losing_the_student_role_is_removed_downstream_and_rechecked(
    services: Services, engine: AsyncEngine, api: Api
) -> None:
    """A `users.updated` without `roles.student` publishes `roster.student.deleted` (the
    student as they last were) and resolves their single-school alert (item 3)."""
    s = Scenario(services, engine, api)
    f = s.factory
    school_a, school_b = f.obj("schools", s.district), f.obj("schools", s.district)
    a, b = school_a["id"], school_b["id"]
    user = f.obj("users", s.district)
    user["roles"]["student"].update(school=a, schools=[a, b], enrollments=[])
    await _assign(api, "imagine_purpose", "district", s.district)
    async with consuming(services, engine):
        await s.send(
            s.event("schools", school_a, "created"),
            s.event("schools", school_b, "created"),
            s.event("users", user, "created"),
        )
        assert [x["status"] for x in await s.alerts(user["id"])] == ["open"]
        staff = user | {"roles": {"teacher": {"sis_id": "T9", "schools": [a], "school": a}}}
        await s.send(s.event("users", staff))
        assert [x["status"] for x in await s.alerts(user["id"])] == ["resolved"]
        gone = await api.client.get(f"/v1/students/{user['id']}", headers=ADMIN)
        assert gone.status_code == 404  # no longer a student

    assert await _messages(engine, user["id"]) == [
        "roster.student.upserted",
        "roster.teacher.upserted",
        "roster.student.deleted",
    ]
    async with engine.connect() as conn:
        data = await conn.scalar(
            text(
                "SELECT data FROM outbox WHERE message_key = :k AND type = 'roster.student.deleted'"
            ),
            {"k": user["id"]},
        )
    assert data["deleted"] is True and data["school_ids"] == sorted([a, b])


async def _section(api: Api, section_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/sections/{section_id}", headers=ADMIN)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def _student(api: Api, student_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/students/{student_id}", headers=ADMIN)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def _status(engine: AsyncEngine, event_id: str) -> str | None:
    async with engine.connect() as conn:
        status: str | None = await conn.scalar(
            select(event_log.c.status).where(event_log.c.event_id == event_id)
        )
        return status


async def _waiting_for_advisory_lock(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count: int = await conn.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
        return count


async def test_a_zombie_batch_after_the_new_owners_commit_changes_no_outcome(
    engine: AsyncEngine,
) -> None:
    """A consumer still finishing a batch after its partitions moved (a zombie) waits on the
    district lock while the new owner applies the same events; once it gets the lock it must
    find them settled, not re-decide them `stale` against the owner's writes (item 4)."""
    factory = Factory()
    district = factory.oid()
    events = [factory.event("users.created", district) for _ in range(3)]
    records = as_records(events)
    applier = RosterApplier(NoDeadLetters())
    async with UnitOfWork(engine) as owner:
        await applier.handle(owner, records)  # holds the district's lock until it commits

        async def zombie() -> None:
            async with UnitOfWork(engine) as uow:
                await applier.handle(uow, records)
                await uow.commit()

        task = asyncio.create_task(zombie())
        async with asyncio.timeout(30):
            while not await _waiting_for_advisory_lock(engine):
                assert not task.done(), task
                await asyncio.sleep(0.02)
        await owner.commit()
    await task
    for event in events:
        assert await _status(engine, event["id"]) == "applied"


async def test_an_assignment_change_locks_its_own_district_only(
    engine: AsyncEngine,
) -> None:
    """A district-wide re-check holds its district's lock for its whole transaction: a batch
    in another district goes on meanwhile, one in the same district waits (item 12)."""
    factory = Factory()
    busy, other = factory.oid(), factory.oid()
    setup = [factory.event("districts.created", d, factory.obj("districts", d)) for d in (busy,)]
    applier = RosterApplier(NoDeadLetters())
    async with UnitOfWork(engine) as uow:
        await applier.handle(uow, as_records(setup))
        await uow.commit()

    async def batch_in(district: str) -> None:
        async with UnitOfWork(engine) as uow:
            # A lock wait that does not end by itself is a failure here, not a slow pass.
            await uow.connection.execute(text("SET LOCAL lock_timeout = '3s'"))
            await applier.handle(uow, as_records([factory.event("users.created", district)]))
            await uow.commit()

    async with UnitOfWork(engine) as assignment:
        await add_assignment(assignment.connection, "mypath_math", "district", busy)
        await batch_in(other)  # not stalled
        with pytest.raises(DBAPIError, match="lock timeout"):
            await batch_in(busy)  # its own district waits for the re-check's commit
    # An assignment to a record not yet known locks every district (its district is unknown).
    async with UnitOfWork(engine) as assignment:
        await add_assignment(assignment.connection, "mypath_math", "school", uuid.uuid4().hex)
        with pytest.raises(DBAPIError, match="lock timeout"):
            await batch_in(other)


async def test_a_row_written_before_migration_0007_keeps_its_ties(engine: AsyncEngine) -> None:
    """A row from before `version_created` existed stands in its event's reception time: a late
    update of the same `last_modified` created before that stays out, a re-share after it
    comes back (review of item 1's migration)."""
    factory = Factory()
    district = factory.oid()
    obj = factory.obj("users", district)
    deleted = factory.event("users.deleted", district, copy.deepcopy(obj))
    late_update = factory.event("users.updated", district, copy.deepcopy(obj))
    # Created after the last change, before the delete was received (Clever's delete carries
    # the record's last_modified as it last was).
    modified = datetime.fromisoformat(obj["last_modified"].replace("Z", "+00:00"))
    late_update["created"] = (modified + timedelta(seconds=1)).isoformat()
    reshared = factory.event("users.created", district, copy.deepcopy(obj))
    reshared["created"] = "2999-01-01T00:00:00Z"  # after the delete was received
    applier = RosterApplier(NoDeadLetters())
    for batch in ([deleted], [late_update], [reshared]):
        async with UnitOfWork(engine) as uow:
            await applier.handle(uow, as_records(batch))
            if batch == [deleted]:  # as migration 0007 leaves a row written before it
                await uow.connection.execute(
                    text("UPDATE users SET version_created = NULL WHERE id = :id"),
                    {"id": obj["id"]},
                )
            await uow.commit()
    assert await _status(engine, late_update["id"]) == "stale"
    assert await _status(engine, reshared["id"]) == "applied"
    async with engine.connect() as conn:
        deleted_now = await conn.scalar(
            text("SELECT deleted FROM users WHERE id = :id"), {"id": obj["id"]}
        )
    assert deleted_now is False
