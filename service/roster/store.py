"""Roster storage: reads and writes through the caller's connection; never commits.

The unit of work that owns the connection commits (see service/db/uow.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import BindParameter, Table, Text, any_, bindparam, delete, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.tables import RECORD_TABLES, event_log, section_members, user_schools
from service.roster.rules import Version

SETTLED = ("applied", "stale", "dead_lettered")


def _ids(ids: Sequence[str]) -> BindParameter[list[str]]:
    """One text[] parameter for `= ANY(...)`: an index scan whatever the list's length, where a
    long `IN (...)` list (one parameter each) can settle into a sequential-scan generic plan."""
    text_array: Any = ARRAY(Text)
    return bindparam("ids", list(ids), type_=text_array)


async def settled_event_ids(conn: AsyncConnection, ids: Sequence[str]) -> set[str]:
    """Event ids whose outcome is already decided: a redelivery or replay skips them."""
    if not ids:
        return set()
    rows = await conn.execute(
        select(event_log.c.event_id).where(
            event_log.c.event_id == any_(_ids(ids)), event_log.c.status.in_(SETTLED)
        )
    )
    return {row[0] for row in rows}


async def lock_districts(conn: AsyncConnection, district_ids: Iterable[str]) -> None:
    """Transaction-scoped advisory locks: two consumers never apply one district at once (even a
    zombie still finishing a batch after its partitions moved). Sorted: no deadlocks."""
    keys = sorted({zlib.crc32(d.encode()) for d in district_ids})
    if keys:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(1, k) FROM unnest(CAST(:keys AS int[])) AS k"),
            {"keys": [k - 2**31 for k in keys]},
        )


async def stored_versions(
    conn: AsyncConnection, kind: str, ids: Sequence[str]
) -> dict[str, Version]:
    """The stored version of each record, rows locked until the transaction ends."""
    table = RECORD_TABLES[kind]
    rows = await conn.execute(
        select(table.c.id, table.c.version_at, table.c.version_delete, table.c.version_event)
        .where(table.c.id == any_(_ids(sorted(ids))))
        .order_by(table.c.id)
        .with_for_update()
    )
    return {r.id: Version(r.version_at, r.version_delete, r.version_event) for r in rows}


async def section_students(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, set[str]]:
    """The stored student lists of these sections (before the batch rewrites them)."""
    if not ids:
        return {}
    rows = await conn.execute(
        select(section_members.c.section_id, section_members.c.user_id).where(
            section_members.c.section_id == any_(_ids(ids)), section_members.c.role == "student"
        )
    )
    students: dict[str, set[str]] = {}
    for section_id, user_id in rows:
        students.setdefault(section_id, set()).add(user_id)
    return students


async def upsert_records(conn: AsyncConnection, kind: str, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    table = RECORD_TABLES[kind]
    stmt = insert(table)
    updated: dict[str, Any] = {
        c.name: stmt.excluded[c.name] for c in table.columns if c.name != "id"
    }
    updated["updated_at"] = text("now()")
    # The planner already decided newest-wins; the guard repeats it in SQL for safety.
    newer = tuple_(
        stmt.excluded.version_at, stmt.excluded.version_delete, stmt.excluded.version_event
    ) > tuple_(table.c.version_at, table.c.version_delete, table.c.version_event)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=[table.c.id], set_=updated, where=newer),
        list(rows),
    )


async def _replace_links(
    conn: AsyncConnection,
    table: Table,
    owner: str,
    other: str,
    links: dict[str, list[tuple[str, str]]],
) -> None:
    """Each owner's (role, other) rows become exactly `links[owner]` (Clever sends full lists)."""
    if not links:
        return
    await conn.execute(delete(table).where(table.c[owner] == any_(_ids(list(links)))))
    rows = [
        {owner: key, "role": role, other: value}
        for key, pairs in links.items()
        for role, value in pairs
    ]
    if rows:
        await conn.execute(insert(table).on_conflict_do_nothing(), rows)


async def replace_section_members(
    conn: AsyncConnection, members: dict[str, list[tuple[str, str]]]
) -> None:
    """A section's student and teacher lists: `members[section]` = [(role, user id)]."""
    await _replace_links(conn, section_members, "section_id", "user_id", members)


async def replace_user_schools(
    conn: AsyncConnection, links: dict[str, list[tuple[str, str]]]
) -> None:
    """The schools a user's roles name: `links[user]` = [(role, school id)]."""
    await _replace_links(conn, user_schools, "user_id", "school_id", links)


async def record_outcomes(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Writes each event's outcome; the door's row (source, received time) is kept."""
    if not rows:
        return
    stmt = insert(event_log)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[event_log.c.event_id],
            set_={
                "status": stmt.excluded.status,
                "error": stmt.excluded.error,
                "applied_at": stmt.excluded.applied_at,
                "kafka_partition": stmt.excluded.kafka_partition,
                "kafka_offset": stmt.excluded.kafka_offset,
            },
        ),
        list(rows),
    )
