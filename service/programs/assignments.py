"""Program assignments and alert acknowledgement: the operations behind the API and the CLI.

Each runs on the caller's unit of work (which commits). An assignment change locks its scope's
district against roster batches (see `store.lock_scope`) and re-checks every student its scope
reaches, in bulk, in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.outbox import store as outbox
from service.programs import alerts, store
from service.programs.check import check_students
from service.programs.rules import SCOPES, Step


class UnknownProgram(ValueError):
    pass


@dataclass(frozen=True)
class AssignmentResult:
    assignment: dict[str, Any]
    created: bool
    decisions: list[Step]  # the alert transitions the change caused
    rechecked: int = 0  # students in the assignment's scope


_COLUMNS = "id, program, scope, scope_id, created_at"


def assignment_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "program": row.program,
        "scope": row.scope,
        "scope_id": row.scope_id,
        "created_at": row.created_at.isoformat(),
    }


async def add_assignment(
    conn: AsyncConnection, program: str, scope: str, scope_id: str
) -> AssignmentResult:
    """Assigns a program; the same (program, scope, scope id) again returns the existing one."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
    catalog = await store.catalog(conn)
    if program not in catalog.names:
        known = ", ".join(sorted(catalog.names))
        raise UnknownProgram(f"unknown program {program!r}; known programs: {known}")
    await store.lock_scope(conn, scope, scope_id)  # after the checks: a refusal waits for none
    inserted = (
        await conn.execute(
            text(
                f"""
                INSERT INTO program_assignments (id, program, scope, scope_id)
                VALUES (:id, :program, :scope, :scope_id)
                ON CONFLICT (program, scope, scope_id) DO NOTHING
                RETURNING {_COLUMNS}
                """
            ),
            {"id": uuid.uuid4().hex, "program": program, "scope": scope, "scope_id": scope_id},
        )
    ).first()
    if inserted is None:
        existing = (
            await conn.execute(
                text(
                    f"SELECT {_COLUMNS} FROM program_assignments "
                    "WHERE program = :program AND scope = :scope AND scope_id = :scope_id"
                ),
                {"program": program, "scope": scope, "scope_id": scope_id},
            )
        ).one()
        return AssignmentResult(assignment_json(existing), False, [])
    students = await store.students_in_scope(conn, scope, [scope_id])
    decisions = await check_students(conn, students, f"assignment:{inserted.id}")
    return AssignmentResult(assignment_json(inserted), True, decisions, len(students))


async def remove_assignment(conn: AsyncConnection, assignment_id: str) -> list[Step] | None:
    """Deletes an assignment and re-checks its scope; None if there is no such assignment."""
    scope = (
        await conn.execute(
            text("SELECT scope, scope_id FROM program_assignments WHERE id = :id"),
            {"id": assignment_id},
        )
    ).first()
    if scope is None:
        return None
    await store.lock_scope(conn, scope.scope, scope.scope_id)
    removed = (
        await conn.execute(
            text(f"DELETE FROM program_assignments WHERE id = :id RETURNING {_COLUMNS}"),
            {"id": assignment_id},
        )
    ).first()
    if removed is None:
        return None
    students = await store.students_in_scope(conn, removed.scope, [removed.scope_id])
    return await check_students(conn, students, f"assignment:{removed.id}")


async def list_assignments(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(
        text(f"SELECT {_COLUMNS} FROM program_assignments ORDER BY created_at, id")
    )
    return [assignment_json(r) for r in rows]


async def acknowledge(conn: AsyncConnection, alert_id: str) -> dict[str, Any] | None:
    """Marks an open alert acknowledged (idempotent); None if unknown, AlertResolved if it has
    resolved already."""
    alert = await store.alert_for_update(conn, alert_id)
    if alert is None:
        return None
    now = datetime.now(UTC)
    ack = alerts.acknowledgement(alert, now)
    if ack is None:
        return alert.detail
    await store.mark_acknowledged(conn, alert_id, now, ack.detail)
    await store.record_history(conn, [ack.history])
    await outbox.append(conn, [ack.message])
    return ack.detail
