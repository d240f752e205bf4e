"""The driver unit of work (the webhook door's claim) on the real database: it commits only when
told, and a failed or dropped connection never goes back to the pool."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import make_engine
from service.db.uow import DriverUnitOfWork
from tests.support.services import Services

TABLE = "driver_uow_probe"


@pytest.fixture
async def door_engine(services: Services, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE IF NOT EXISTS {TABLE} (v text PRIMARY KEY)"))
        await conn.execute(text(f"TRUNCATE {TABLE}"))
    door = make_engine(services.database_url, pool_size=3, pre_ping=False)
    yield door
    await door.dispose()


async def _values(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return {row[0] for row in await conn.execute(text(f"SELECT v FROM {TABLE}"))}


async def test_commit_keeps_and_leaving_without_commit_rolls_back(
    door_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    async with DriverUnitOfWork(door_engine) as uow:
        await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", "kept")
        await uow.commit()
    async with DriverUnitOfWork(door_engine) as uow:
        await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", "left")
    with pytest.raises(RuntimeError):
        await _insert_then_fail(door_engine)
    assert await _values(engine) == {"kept"}


async def _insert_then_fail(door_engine: AsyncEngine) -> None:
    async with DriverUnitOfWork(door_engine) as uow:
        await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", "raised")
        raise RuntimeError("the caller's own failure")


async def _insert_twice(door_engine: AsyncEngine) -> None:
    async with DriverUnitOfWork(door_engine) as uow:
        await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ('a'), ('a')")


async def test_a_failed_statement_leaves_a_usable_pool(
    door_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    with pytest.raises(asyncpg.UniqueViolationError):
        await _insert_twice(door_engine)
    for value in ("b", "c", "d", "e"):  # more units than the pool holds: none is broken
        async with DriverUnitOfWork(door_engine) as uow:
            await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", value)
            await uow.commit()
    assert await _values(engine) == {"b", "c", "d", "e"}


async def test_dropped_connections_fail_one_unit_then_the_pool_is_fresh(
    door_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    # Fill the pool with three idle connections, then have the server drop all of them.
    units = [DriverUnitOfWork(door_engine) for _ in range(3)]
    for unit in units:
        await unit.__aenter__()
    for unit in units:
        await unit.__aexit__(None, None, None)
    async with engine.connect() as conn:
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
        )
    failures = 0
    for value in ("x", "y", "z"):
        try:
            async with DriverUnitOfWork(door_engine) as uow:
                await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", value)
                await uow.commit()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            failures += 1
    assert failures == 1  # the first unit finds a dead connection; the pool is then replaced
    assert await _values(engine) == {"y", "z"}
