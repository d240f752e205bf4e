"""Roster storage: reads and writes through the caller's connection; never commits.

The unit of work that owns the connection commits (see service/db/uow.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    BindParameter,
    DateTime,
    Table,
    Text,
    any_,
    bindparam,
    delete,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.clever import User
from service.db.packed import text_array
from service.db.tables import RECORD_TABLES, event_log, section_members, user_schools
from service.roster.rules import Version

SETTLED = ("applied", "stale", "dead_lettered")


def _ids(ids: Sequence[str]) -> BindParameter[list[str]]:
    """One text[] parameter for `= ANY(...)`: an index scan whatever the list's length, where a
    long `IN (...)` list (one parameter each) can settle into a sequential-scan generic plan."""
    text_array: Any = ARRAY(Text)
    return bindparam("ids", list(ids), type_=text_array)


class Settled(NamedTuple):
    status: str
    pending: bool  # dead-lettered, its dead-letter record not yet acknowledged by Kafka
    error: str | None


async def settled_events(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Settled]:
    """Events whose outcome is already decided (a redelivery or replay skips them), by id."""
    if not ids:
        return {}
    rows = await conn.execute(
        select(
            event_log.c.event_id,
            event_log.c.status,
            event_log.c.dead_letter_pending,
            event_log.c.error,
        ).where(event_log.c.event_id == any_(_ids(ids)), event_log.c.status.in_(SETTLED))
    )
    return {row[0]: Settled(row[1], row[2], row[3]) for row in rows}


async def dead_letters_sent(conn: AsyncConnection, ids: Sequence[str]) -> None:
    """Kafka has acknowledged these events' dead-letter records."""
    if ids:
        await conn.execute(
            update(event_log)
            .where(event_log.c.event_id == any_(_ids(ids)), event_log.c.dead_letter_pending)
            .values(dead_letter_pending=False)
        )


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
        .where(table.c.id == any_(_ids(sorted(ids))))
        .order_by(table.c.id)
        .with_for_update(of=table)
    )
    return {
        r.id: Version(r.version_at, r.version_created, r.version_delete, r.version_event)
        for r in rows
    }


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


_ARRAY_TYPES = {"TEXT": "text", "BOOLEAN": "boolean", "INTEGER": "int", "BIGINT": "bigint"}


def _is_text(table: Table, name: str, overrides: dict[str, str]) -> bool:
    """Columns that travel as text: plain text, and JSONB, text arrays and overridden columns,
    which are sent as text and cast back."""
    column_type = table.c[name].type
    return (
        name in overrides or isinstance(column_type, (JSONB, ARRAY)) or str(column_type) == "TEXT"
    )


def _unnest(
    table: Table, columns: Sequence[str], overrides: dict[str, str], text_sql: dict[str, str]
) -> tuple[str, str]:
    """`(unnest arguments, select list)` for inserting many rows as one statement: each column
    travels as one parameter, so PostgreSQL plans and runs a single INSERT ... SELECT instead
    of one execution per row (the cost that dominated batch writes). Text columns go packed
    into one string where they can (service/db/packed.py), else as arrays; JSONB values and
    text arrays travel as text and are cast back."""
    args, select_list = [], []
    for i, name in enumerate(columns):
        column_type = table.c[name].type
        if name in text_sql:
            args.append(text_sql[name])
        elif isinstance(column_type, DateTime):
            args.append(f"CAST(:c{i} AS timestamptz[])")
        else:
            args.append(f"CAST(:c{i} AS {_ARRAY_TYPES[str(column_type)]}[])")
        if name in overrides:
            select_list.append(overrides[name].format(c=f"c{i}"))
        elif isinstance(column_type, JSONB):
            select_list.append(f"CAST(c{i} AS jsonb)")
        elif isinstance(column_type, ARRAY):
            select_list.append(f"CAST(c{i} AS text[])")
        else:
            select_list.append(f"c{i}")
    aliases = ", ".join(f"c{i}" for i in range(len(columns)))
    return f"unnest({', '.join(args)}) AS u({aliases})", ", ".join(select_list)


def _array_literal(values: Sequence[str]) -> str:
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


def _column_values(
    table: Table, name: str, rows: Sequence[dict[str, Any]], overrides: dict[str, str]
) -> list[Any]:
    column_type = table.c[name].type
    values = [row.get(name) for row in rows]
    if name in overrides:
        return values
    if isinstance(column_type, JSONB):
        return [None if v is None else orjson.dumps(v).decode() for v in values]
    if isinstance(column_type, ARRAY):
        return [None if v is None else _array_literal(v) for v in values]
    return values


async def insert_rows(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: str = "",
    overrides: dict[str, str] | None = None,
) -> None:
    """Inserts many rows in one statement (see `_unnest`); `conflict` is an ON CONFLICT clause;
    `overrides` maps a column to the SQL that computes it from its value sent as text (`{c}`)."""
    if not rows:
        return
    overrides = overrides or {}
    columns = list(rows[0])
    params: dict[str, Any] = {}
    text_sql: dict[str, str] = {}  # the text columns' unnest arguments
    for i, name in enumerate(columns):
        values = _column_values(table, name, rows, overrides)
        if _is_text(table, name, overrides):
            text_sql[name], params[f"c{i}"] = text_array(f"c{i}", values)
        else:
            params[f"c{i}"] = values
    source, select_list = _unnest(table, columns, overrides, text_sql)
    await conn.execute(
        text(
            f"INSERT INTO {table.name} AS t ({', '.join(columns)}) "
            f"SELECT {select_list} FROM {source} {conflict}"
        ),
        params,
    )


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
    await conn.execute(delete(table).where(table.c[owner] == any_(_ids(list(links)))))
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


async def record_outcomes(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Writes each event's outcome; the door's row (source, received time) is kept."""
    if not rows:
        return
    updated = ("status", "error", "applied_at", "kafka_partition", "kafka_offset")
    kept = [c for c in (*updated, "dead_letter_pending") if c in rows[0]]
    await insert_rows(
        conn,
        event_log,
        rows,
        conflict="ON CONFLICT (event_id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in kept),
    )
