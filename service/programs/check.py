"""Runs the single-school rule inside the caller's transaction and writes what it decides.

Two entry points: `check_batch` for the roster consumer (the batch's applied events, replayed
per event by the pure rule) and `check_students` for assignment changes (every student in the
scope, once). Both load, set-based, the part of the roster the change can touch as it is before
the batch's own writes, run `service/programs/rules.replay`, then write alerts, their history and
their `roster.alerts.v1` messages (outbox, built by the pure `alerts.alert_writes`) in a few
statements.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.outbox import store as outbox
from service.programs import alerts, store
from service.programs.rules import (
    Catalog,
    Change,
    FlagChange,
    Person,
    Recheck,
    SectionChange,
    SectionState,
    Step,
    UserChange,
    World,
    replay,
)
from service.roster.store import section_students


async def _rows(conn: AsyncConnection, sql: str, ids: Iterable[str]) -> list[Any]:
    ids = sorted(set(ids))
    if not ids:
        return []
    return list(await conn.execute(text(sql), {"ids": ids}))


async def _student_links(
    conn: AsyncConnection, sql: str, ids: Iterable[str]
) -> dict[str, set[str]]:
    """`{student: {linked id}}` from a query of (student id, linked id) rows."""
    links: dict[str, set[str]] = {}
    for student_id, linked in await _rows(conn, sql, ids):
        links.setdefault(student_id, set()).add(linked)
    return links


async def _deleted(conn: AsyncConnection, table: str, ids: Iterable[str]) -> set[str]:
    """Those of `ids` whose record in `table` (schools or districts) is a tombstone."""
    sql = f"SELECT id FROM {table} WHERE deleted AND id = ANY(CAST(:ids AS text[]))"
    return {r[0] for r in await _rows(conn, sql, ids)}


async def load_world(
    conn: AsyncConnection,
    students: set[str],
    sections: set[str],
    schools: set[str],
    districts: set[str],
    members_of: dict[str, set[str]] | None = None,
) -> World:
    """The students, their sections (with the full student lists of `sections`, loaded here
    unless given as `members_of`), and which of the schools and districts involved are deleted."""
    users = await _rows(
        conn,
        """SELECT id, district_id, deleted, 'student' = ANY(roles) AS is_student,
                  primary_school_id, sis_id, name_first, name_middle, name_last
             FROM users WHERE id = ANY(CAST(:ids AS text[]))""",
        students,
    )
    role_schools = await _student_links(
        conn,
        "SELECT user_id, school_id FROM user_schools "
        "WHERE role = 'student' AND user_id = ANY(CAST(:ids AS text[]))",
        students,
    )
    people = {
        u.id: Person(
            known=True,
            is_student=u.is_student,
            deleted=u.deleted,
            district_id=u.district_id,
            role_schools=frozenset(role_schools.get(u.id, ())),
            primary_school_id=u.primary_school_id,
            sis_id=u.sis_id,
            name=(u.name_first, u.name_middle, u.name_last),
        )
        for u in users
    }
    memberships = await _student_links(
        conn,
        "SELECT user_id, section_id FROM section_members "
        "WHERE role = 'student' AND user_id = ANY(CAST(:ids AS text[]))",
        students,
    )
    if members_of is None:
        members_of = await section_students(conn, sorted(sections))
    all_sections = sections | {s for linked in memberships.values() for s in linked}
    section_states = {
        r.id: SectionState(r.school_id, r.deleted, frozenset(members_of.get(r.id, ())))
        for r in await _rows(
            conn,
            "SELECT id, school_id, deleted FROM sections WHERE id = ANY(CAST(:ids AS text[]))",
            all_sections,
        )
    }
    all_schools = schools | {s.school_id for s in section_states.values()}
    all_schools |= {s for p in people.values() for s in p.role_schools}
    deleted_schools = await _deleted(conn, "schools", all_schools)
    all_districts = districts | {p.district_id for p in people.values() if p.district_id}
    deleted_districts = await _deleted(conn, "districts", all_districts)
    return World(people, section_states, memberships, deleted_schools, deleted_districts)


async def check_batch(
    conn: AsyncConnection, changes: Sequence[Change], students_of: Mapping[str, set[str]]
) -> list[Step]:
    """The rule over a batch's applied events, in order. Call before the batch's roster writes:
    the world is loaded as it was, then replayed in memory. `students_of` holds the stored
    student lists of (at least) every section the changes name, as `section_students` reads
    them: the roster apply reads them once and diffs enrollments with them too."""
    students: set[str] = set()
    sections: set[str] = set()
    flags: dict[str, set[str]] = {"schools": set(), "districts": set()}
    for change in changes:
        if isinstance(change, UserChange):
            students.add(change.user_id)
        elif isinstance(change, SectionChange):
            sections.add(change.section_id)
            students |= change.state.students
        elif isinstance(change, FlagChange):
            flags[change.kind].add(change.record_id)
    # Students the batch can reach through what is stored: the sections' current students, and
    # everyone linked to a school, or in a district, whose deletion the batch changes (an update
    # that neither deletes nor restores changes no one's schools, so loads no one).
    members_of = {s: students_of[s] for s in sorted(sections) if s in students_of}
    for members in members_of.values():
        students |= members
    for kind in ("schools", "districts"):
        state = await _deleted(conn, kind, flags[kind])
        flipped = set()
        for change in changes:
            if (
                isinstance(change, FlagChange)
                and change.kind == kind
                and (change.record_id in state) != change.deleted
            ):
                flipped.add(change.record_id)
                state ^= {change.record_id}
        students |= await store.students_in_scope(conn, kind.removesuffix("s"), flipped)
    if not students:
        return []
    world = await load_world(
        conn, students, sections, flags["schools"], flags["districts"], members_of
    )
    return await _run(conn, world, changes, students)


async def check_students(
    conn: AsyncConnection, students: Iterable[str], trigger: str
) -> list[Step]:
    """Re-checks these students once against the stored roster (an assignment changed)."""
    ids = set(students)
    if not ids:
        return []
    world = await load_world(conn, ids, set(), set(), set())
    return await _run(conn, world, [Recheck(trigger, frozenset(ids))], ids)


async def _run(
    conn: AsyncConnection, world: World, changes: Sequence[Change], students: set[str]
) -> list[Step]:
    # Every id an assignment could be scoped to, as things are and as the batch makes them: the
    # students, their sections and schools, and their districts.
    scope_ids = set(students) | set(world.sections)
    for change in changes:
        if isinstance(change, SectionChange):
            scope_ids |= {change.section_id, change.state.school_id}
        elif isinstance(change, UserChange):
            scope_ids |= change.person.role_schools
            if change.person.district_id:
                scope_ids.add(change.person.district_id)
    for person in world.people.values():
        scope_ids |= person.role_schools
        if person.district_id:
            scope_ids.add(person.district_id)
    scope_ids |= {s.school_id for s in world.sections.values()}
    assignments = await store.assignments_for(conn, scope_ids)
    catalog = await store.catalog(conn)
    active, details = await store.active_alerts(conn, sorted(students))
    steps = replay(world, changes, assignments, catalog, active)
    if steps:
        await _write(conn, world, steps, catalog, details)
    return steps


async def _write(
    conn: AsyncConnection,
    world: World,
    steps: Sequence[Step],
    catalog: Catalog,
    details: dict[str, dict[str, Any]],
) -> None:
    now = datetime.now(UTC)
    school_ids = sorted({s for step in steps for s in step.conflict.school_ids})
    sql = "SELECT id, name FROM schools WHERE id = ANY(CAST(:ids AS text[]))"
    names = {school_id: name for school_id, name in await _rows(conn, sql, school_ids)}
    writes = alerts.alert_writes(
        steps, world.people, catalog, details, names, now, lambda: uuid.uuid4().hex
    )
    # New alerts are inserted as they end up (a batch can open and resolve one); the unique
    # index on unresolved alerts holds throughout, since an insert is at most one per student
    # unresolved, and updates resolve before any new one is inserted.
    await store.update_alerts(conn, writes.updates)
    await store.insert_alerts(conn, writes.inserts)
    await store.record_history(conn, writes.history)
    await outbox.append(conn, writes.messages)
