"""Roster storage: reads and writes through the caller's connection; never commits.

The unit of work that owns the connection commits (see service/db/uow.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, any_, delete, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.clever import User
from service.db.bulk import ids_param, insert_rows
from service.db.tables import RECORD_TABLES, section_members, user_schools
from service.roster.rules import Version


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
        select(
            table.c.id,
            table.c.version_at,
            literal_column(_CREATED.format(t=kind)).label("version_created"),
            table.c.version_delete,
            table.c.version_event,
        )
        .where(table.c.id == any_(ids_param(sorted(ids))))
        .order_by(table.c.id)
        .with_for_update(of=table)
    )
    return {
        r.id: Version(r.version_at, r.version_created, r.version_delete, r.version_event)
        for r in rows
    }


async def stored_as(conn: AsyncConnection, kind: str, events: dict[str, str]) -> set[str]:
    """The records among `events` (record id -> the whole event's JSON as received) whose stored
    object is exactly the event's object (compared as jsonb, in the database: neither side is
    shipped back or decoded here)."""
    if not events:
        return set()
    ids = sorted(events)
    rows = await conn.execute(
        text(
            f"SELECT t.id FROM {RECORD_TABLES[kind].name} t "
            "JOIN unnest(CAST(:ids AS text[]), CAST(:events AS text[])) AS u(id, event) "
            "ON t.id = u.id WHERE t.data = CAST(u.event AS jsonb) -> 'data' -> 'object'"
        ),
        {"ids": ids, "events": [events[i] for i in ids]},
    )
    return set(rows.scalars())


async def section_students(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, set[str]]:
    """The stored student lists of these sections (before the batch rewrites them)."""
    if not ids:
        return {}
    rows = await conn.execute(
        select(section_members.c.section_id, section_members.c.user_id).where(
            section_members.c.section_id == any_(ids_param(ids)),
            section_members.c.role == "student",
        )
    )
    students: dict[str, set[str]] = {}
    for section_id, user_id in rows:
        students.setdefault(section_id, set()).add(user_id)
    return students


async def users_losing_roles(
    conn: AsyncConnection, lacking: dict[str, list[str]]
) -> dict[str, User]:
    """The stored, live user records that hold a role their write lacks (`lacking[role]` =
    the users written without it): the record as it was, for the role's `deleted` message. Few
    users change roles, and only theirs are read whole."""
    if not any(lacking.values()):
        return {}
    held = " OR ".join(
        f"('{role}' = ANY(roles) AND id = ANY(CAST(:{role} AS text[])))" for role in lacking
    )
    rows = await conn.execute(
        text(f"SELECT id, data FROM users WHERE NOT deleted AND ({held})"),
        {role: sorted(set(users_)) for role, users_ in lacking.items()},
    )
    return {r.id: User.model_validate(r.data) for r in rows}


# A record's version in SQL: the same columns, in the same order, as `rules.Version` compares.
# A row written before migration 0007 has no `version_created`: its event's reception time
# stands in (never before the event's `created`, so no older event wins over it), else the far
# future (the stored row wins every tie, as it did before).
_CREATED = (
    "COALESCE({t}.version_created, (SELECT e.received_at FROM event_log e "
    "WHERE e.event_id = {t}.version_event), TIMESTAMPTZ '9999-12-31 00:00:00+00')"
)
STORED_VERSION = "{t}.version_at, " + _CREATED + ", {t}.version_delete, {t}.version_event"
_INCOMING_VERSION = "{t}.version_at, {t}.version_created, {t}.version_delete, {t}.version_event"


async def upsert_records(conn: AsyncConnection, kind: str, rows: Sequence[dict[str, Any]]) -> None:
    """Writes the planner's winning rows; the version guard repeats newest-wins in SQL. Each
    row's `data` is the whole event's JSON as received: the database takes the object out of it
    (work this process would otherwise do twice, parsing and re-serialising)."""
    if not rows:
        return
    table = RECORD_TABLES[kind]
    columns = list(rows[0])
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "id")
    await insert_rows(
        conn,
        table,
        rows,
        conflict=(
            f"ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now() "
            f"WHERE ({_INCOMING_VERSION.format(t='EXCLUDED')}) > ({STORED_VERSION.format(t='t')})"
        ),
        overrides={"data": "CAST({c} AS jsonb) -> 'data' -> 'object'"},
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
    await conn.execute(delete(table).where(table.c[owner] == any_(ids_param(list(links)))))
    rows = [
        {owner: key, "role": role, other: value}
        for key, pairs in links.items()
        for role, value in pairs
    ]
    await insert_rows(conn, table, rows, conflict="ON CONFLICT DO NOTHING")


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
