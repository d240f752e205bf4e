"""Set-based statements on any table: many rows in one INSERT, many ids in one parameter.

Batch writes send each column as one parameter (`insert_rows`), and id lists as one `text[]`
(`ids_param`), so a statement's cost does not grow with its parameter count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import BindParameter, DateTime, Table, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.packed import text_array


def ids_param(ids: Sequence[str]) -> BindParameter[list[str]]:
    """One text[] parameter for `= ANY(...)`: an index scan whatever the list's length, where a
    long `IN (...)` list (one parameter each) can settle into a sequential-scan generic plan."""
    text_array: Any = ARRAY(Text)
    return bindparam("ids", list(ids), type_=text_array)


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
