"""Reads and writes for programs, assignments and alerts, through the caller's connection (never
commits). Every read is one set-based statement over all the students at hand."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.programs.rules import ActiveAlert, Assignment, Catalog, Conflict
from service.roster.store import lock_districts

# Serialises assignment changes against roster batches. Without it, a batch could check a
# student against the assignments it saw while an assignment committed meanwhile re-checks the
# students it saw: a student joining the scope in between would be checked by neither. Every
# batch takes it shared, then its districts' locks exclusively (`roster.store.lock_districts`).
# An assignment change takes it shared too, then the one district its scope lies in (see
# `lock_scope`), so a re-check in one district never stalls batches in another; only a scope
# not yet known (so in no known district) takes it exclusively, stalling every batch.
_ASSIGNMENTS_LOCK = (2, 0)


async def lock_assignments_shared(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_xact_lock_shared(:a, :b)"), _lock_params())


async def lock_assignments_exclusive(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), _lock_params())


# The district of a scope's record; a district scope is its own.
_SCOPE_DISTRICT = {
    "school": "SELECT district_id FROM schools WHERE id = :id",
    "section": "SELECT district_id FROM sections WHERE id = :id",
    "student": "SELECT district_id FROM users WHERE id = :id",
}


async def lock_scope(conn: AsyncConnection, scope: str, scope_id: str) -> None:
    """An assignment change's locks, held until its transaction ends: its scope's district
    (every batch in that district waits, none elsewhere), or everything if that is unknown."""
    district = (
        scope_id
        if scope == "district"
        else await conn.scalar(text(_SCOPE_DISTRICT[scope]), {"id": scope_id})
    )
    if district is None:
        await lock_assignments_exclusive(conn)
    else:
        await lock_assignments_shared(conn)
        await lock_districts(conn, [district])


def _lock_params() -> dict[str, int]:
    return {"a": _ASSIGNMENTS_LOCK[0], "b": _ASSIGNMENTS_LOCK[1]}


async def catalog(conn: AsyncConnection) -> Catalog:
    rows = (await conn.execute(text("SELECT code, name, single_school FROM programs"))).all()
    return Catalog(
        names={code: name for code, name, _ in rows},
        single_school=frozenset(code for code, _, single in rows if single),
    )


async def catalog_rows(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(text("SELECT code, name, single_school FROM programs ORDER BY code"))
    return [dict(r._mapping) for r in rows]


def _assignment(row: Any) -> Assignment:
    return Assignment(row.id, row.program, row.scope, row.scope_id)


async def assignments_for(conn: AsyncConnection, scope_ids: Iterable[str]) -> list[Assignment]:
    """Assignments whose scope is any of these ids (Clever ids are globally unique)."""
    ids = sorted(set(scope_ids))
    if not ids:
        return []
    rows = await conn.execute(
        text(
            "SELECT id, program, scope, scope_id FROM program_assignments "
            "WHERE scope_id = ANY(CAST(:ids AS text[]))"
        ),
        {"ids": ids},
    )
    return [_assignment(r) for r in rows]


_SCOPE_STUDENTS = {
    "student": "SELECT unnest(CAST(:ids AS text[]))",
    "section": (
        "SELECT user_id FROM section_members "
        "WHERE role = 'student' AND section_id = ANY(CAST(:ids AS text[]))"
    ),
    "school": (
        "SELECT student_id FROM student_school_links WHERE school_id = ANY(CAST(:ids AS text[]))"
    ),
    "district": (
        "SELECT id FROM users WHERE 'student' = ANY(roles) "
        "AND district_id = ANY(CAST(:ids AS text[]))"
    ),
}


async def students_in_scope(
    conn: AsyncConnection, scope: str, scope_ids: Iterable[str]
) -> set[str]:
    """Every student an assignment at these scope ids can reach (placeholders included)."""
    ids = sorted(set(scope_ids))
    if not ids:
        return set()
    return {r[0] for r in await conn.execute(text(_SCOPE_STUDENTS[scope]), {"ids": ids})}


async def active_alerts(
    conn: AsyncConnection, student_ids: Sequence[str]
) -> tuple[dict[str, ActiveAlert], dict[str, dict[str, Any]]]:
    """Each student's unresolved alert, row-locked until the transaction ends, and the data of
    its last message by alert id."""
    if not student_ids:
        return {}, {}
    rows = await conn.execute(
        text(
            """
            SELECT id, student_id, status, school_ids, programs, detail FROM alerts
             WHERE student_id = ANY(CAST(:ids AS text[])) AND status <> 'resolved'
             ORDER BY student_id FOR UPDATE
            """
        ),
        {"ids": sorted(set(student_ids))},
    )
    out = {}
    details = {}
    for r in rows:
        details[r.id] = dict(r.detail)
        programs = tuple(
            (
                p["code"],
                tuple(
                    Assignment(s["assignment_id"], p["code"], s["scope"], s["scope_id"])
                    for s in p["sources"]
                ),
            )
            for p in r.programs
        )
        out[r.student_id] = ActiveAlert(r.id, r.status, Conflict(tuple(r.school_ids), programs))
    return out, details


async def insert_alerts(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(
            text(
                """
                INSERT INTO alerts (id, type, district_id, student_id, status, school_ids,
                    programs, detail, suggested_school_id, opened_at, updated_at, resolved_at,
                    trigger_event_id)
                VALUES (:id, :type, :district_id, :student_id, :status, :school_ids,
                    CAST(:programs AS jsonb), CAST(:detail AS jsonb), :suggested_school_id,
                    :at, :at, :resolved_at, :trigger_event_id)
                """
            ),
            list(rows),
        )


async def update_alerts(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Updates (or resolves) alerts; `resolved_at`/`acknowledged_at` are kept when None."""
    if rows:
        await conn.execute(
            text(
                """
                UPDATE alerts SET status = :status, school_ids = :school_ids,
                       programs = CAST(:programs AS jsonb), detail = CAST(:detail AS jsonb),
                       suggested_school_id = :suggested_school_id, updated_at = :at,
                       resolved_at = coalesce(:resolved_at, resolved_at),
                       acknowledged_at = coalesce(:acknowledged_at, acknowledged_at),
                       trigger_event_id = :trigger_event_id
                 WHERE id = :id
                """
            ),
            list(rows),
        )


async def record_history(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(
            text(
                """
                INSERT INTO alert_history (alert_id, action, at, trigger_event_id, school_ids,
                    programs)
                VALUES (:alert_id, :action, :at, :trigger_event_id, :school_ids, :programs)
                """
            ),
            list(rows),
        )
