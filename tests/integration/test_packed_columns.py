"""Batch writes send text columns packed into one string where they can (service/db/packed.py):
what PostgreSQL stores is exactly what was sent, packed or not."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Table, Text, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.bulk import insert_rows
from service.db.packed import NULL, SEPARATOR

metadata = MetaData()
probe = Table(
    "packed_probe",
    metadata,
    Column("id", Text, primary_key=True),
    Column("label", Text),
    Column("doc", JSONB),
)

PACKABLE = [
    {"id": "a", "label": "plain", "doc": {"k": "v"}},
    {"id": "b", "label": None, "doc": None},
    {"id": "c", "label": "", "doc": {"s": 'quote " and \\ backslash'}},
    {"id": "d", "label": f"ünïcode {NULL} inside", "doc": {"n": [1, 2]}},
]
NOT_PACKABLE = [  # a separator in one value, the NULL marker as another: sent as arrays
    {"id": "e", "label": f"x{SEPARATOR}y", "doc": {"k": 1}},
    {"id": "f", "label": NULL, "doc": {}},
]


@pytest.mark.parametrize("rows", [PACKABLE, NOT_PACKABLE, [{"id": "g", "label": ""}]])
async def test_text_columns_round_trip(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.connect() as conn:
        await conn.run_sync(metadata.create_all)
        try:
            await insert_rows(conn, probe, rows)
            stored = (await conn.execute(select(probe).order_by(probe.c.id))).mappings().all()
            expected = [{"doc": None} | row for row in rows]
            assert [dict(r) for r in stored] == expected
        finally:
            await conn.rollback()
