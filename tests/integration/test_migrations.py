"""Migrations on a real, empty database: up to head, a row round trip, and back down to empty."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect, select

from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.db.tables import event_log
from service.db.uow import UnitOfWork
from tests.support.services import Services, create_database, drop_database


async def _round_trip(url: str) -> dict[str, object]:
    engine = make_engine(url, pool_size=1)
    try:
        received = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
        async with UnitOfWork(engine) as uow:
            await uow.connection.execute(
                event_log.insert().values(
                    event_id="e1",
                    type="users.created",
                    district_id="d1",
                    source="webhook",
                    received_at=received,
                )
            )
            await uow.commit()
        async with UnitOfWork(engine) as uow:  # not committed: rolled back on exit
            await uow.connection.execute(
                event_log.insert().values(
                    event_id="e2",
                    type="users.created",
                    district_id="d1",
                    source="webhook",
                    received_at=received,
                )
            )
        async with engine.connect() as conn:
            rows = (await conn.execute(select(event_log))).mappings().all()
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert "alembic_version" in tables
        assert [row["event_id"] for row in rows] == ["e1"]
        return dict(rows[0])
    finally:
        await engine.dispose()


async def _tables(url: str) -> list[str]:
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: sorted(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


def test_migrate_from_empty_round_trip_and_downgrade(services: Services) -> None:
    url = create_database(services.database_url, "roster_migration_test")
    try:
        assert asyncio.run(_tables(url)) == []
        upgrade(url)
        upgrade(url)  # a second run is a no-op
        row = asyncio.run(_round_trip(url))
        assert row["status"] == "accepted"  # server default
        assert row["received_at"] == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

        from alembic import command

        from service.db.migrate import alembic_config

        command.downgrade(alembic_config(url), "base")
        assert asyncio.run(_tables(url)) == ["alembic_version"]
    finally:
        drop_database(services.database_url, "roster_migration_test")


async def _schema_differences(url: str) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.db.tables import metadata

    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()


def test_the_table_definitions_match_the_migrated_database(services: Services) -> None:
    """`service/db/tables.py` (what the code queries) and the Alembic revisions (what the
    database has) must not drift apart."""
    url = create_database(services.database_url, "roster_schema_drift_test")
    try:
        upgrade(url)
        differences = asyncio.run(_schema_differences(url))
        assert differences == []
    finally:
        drop_database(services.database_url, "roster_schema_drift_test")
