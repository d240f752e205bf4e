"""Reads and writes for programs, assignments and alerts, through the caller's connection (never
commits). Every read is one set-based statement over all the students at hand."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.programs.alerts import AlertRow, HistoryRow, StoredAlert
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


def _alert_params(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "district_id": row.district_id,
        "student_id": row.student_id,
        "status": row.status,
        "school_ids": row.school_ids,
        "programs": orjson.dumps(row.programs).decode(),
        "detail": orjson.dumps(row.detail).decode(),
        "suggested_school_id": row.suggested_school_id,
        "at": row.at,
        "resolved_at": row.resolved_at,
        "acknowledged_at": row.acknowledged_at,
        "trigger_event_id": row.trigger_event_id,
    }


async def insert_alerts(conn: AsyncConnection, rows: Sequence[AlertRow]) -> None:
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
            [_alert_params(r) for r in rows],
        )


async def update_alerts(conn: AsyncConnection, rows: Sequence[AlertRow]) -> None:
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
            [_alert_params(r) for r in rows],
        )


async def record_history(conn: AsyncConnection, rows: Sequence[HistoryRow]) -> None:
    if rows:
        await conn.execute(
            text(
                """
                INSERT INTO alert_history (alert_id, action, at, trigger_event_id, school_ids,
                    programs)
                VALUES (:alert_id, :action, :at, :trigger_event_id, :school_ids, :programs)
                """
            ),
            [
                {
                    "alert_id": r.alert_id,
                    "action": r.action.value,
                    "at": r.at,
                    "trigger_event_id": r.trigger_event_id,
                    "school_ids": r.school_ids,
                    "programs": r.programs,
                }
                for r in rows
            ],
        )


async def alert_for_update(conn: AsyncConnection, alert_id: str) -> StoredAlert | None:
    """The alert, row-locked until the transaction ends; None if there is no such alert."""
    row = (
        await conn.execute(
            text(
                "SELECT id, student_id, district_id, status, detail, school_ids, "
                "trigger_event_id FROM alerts WHERE id = :id FOR UPDATE"
            ),
            {"id": alert_id},
        )
    ).first()
    if row is None:
        return None
    return StoredAlert(
        id=row.id,
        student_id=row.student_id,
        district_id=row.district_id,
        status=row.status,
        detail=dict(row.detail),
        school_ids=list(row.school_ids),
        trigger_event_id=row.trigger_event_id,
    )


async def mark_acknowledged(
    conn: AsyncConnection, alert_id: str, at: datetime, detail: dict[str, Any]
) -> None:
    await conn.execute(
        text(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_at = :now, updated_at = :now,"
            " detail = CAST(:detail AS jsonb) WHERE id = :id"
        ),
        {"now": at, "detail": orjson.dumps(detail).decode(), "id": alert_id},
    )


# What the API shows of an alert.
_ALERT_COLUMNS = """
    id, type, district_id, student_id, school_ids, programs, status, opened_at, resolved_at,
    acknowledged_at, updated_at, trigger_event_id, suggested_school_id, detail
"""


async def list_alerts(
    conn: AsyncConnection,
    *,
    status: str | None,
    district_id: str | None,
    student_id: str | None,
    limit: int,
) -> list[Row[Any]]:
    """Newest first; the filters given combine."""
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for name, value in (
        ("status", status),
        ("district_id", district_id),
        ("student_id", student_id),
    ):
        if value is not None:
            clauses.append(f"{name} = :{name}")
            params[name] = value
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = await conn.execute(
        text(
            f"SELECT {_ALERT_COLUMNS} FROM alerts {where} ORDER BY opened_at DESC, id LIMIT :limit"
        ),
        params,
    )
    return list(rows)


async def alert(conn: AsyncConnection, alert_id: str) -> Row[Any] | None:
    return (
        await conn.execute(
            text(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = :id"), {"id": alert_id}
        )
    ).first()


async def alert_history(conn: AsyncConnection, alert_id: str) -> list[Row[Any]]:
    """The alert's transitions, oldest first."""
    rows = await conn.execute(
        text(
            "SELECT action, at, trigger_event_id, school_ids, programs FROM alert_history "
            "WHERE alert_id = :id ORDER BY id"
        ),
        {"id": alert_id},
    )
    return list(rows)
