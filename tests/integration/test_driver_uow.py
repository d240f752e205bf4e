"""The driver unit of work and its pool (the webhook door's claim) on the real database: it
commits only when told, and a failed or dropped connection never goes back to the pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.driver_pool import DriverPool, driver_dsn
from service.db.uow import DRIVER_ERRORS, DriverUnitOfWork
from tests.support.services import Services

TABLE = "driver_uow_probe"
DEFERRED = "driver_uow_deferred"


@pytest.fixture
async def door_pool(services: Services, engine: AsyncEngine) -> AsyncIterator[DriverPool]:
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE IF NOT EXISTS {TABLE} (v text PRIMARY KEY)"))
        await conn.execute(text(f"TRUNCATE {TABLE}"))
    pool = DriverPool(driver_dsn(services.database_url), size=3)
    yield pool
    await pool.close()


async def _values(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return {row[0] for row in await conn.execute(text(f"SELECT v FROM {TABLE}"))}


async def test_commit_keeps_and_leaving_without_commit_rolls_back(
    door_pool: DriverPool, engine: AsyncEngine
) -> None:
    async with DriverUnitOfWork(door_pool) as uow:
        await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", "kept")
        await uow.commit()
    async with DriverUnitOfWork(door_pool) as uow:
        await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", "left")
    with pytest.raises(RuntimeError):
        await _insert_then_fail(door_pool)
    assert await _values(engine) == {"kept"}


async def _insert_then_fail(door_pool: DriverPool) -> None:
    async with DriverUnitOfWork(door_pool) as uow:
        await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", "raised")
        raise RuntimeError("the caller's own failure")


async def _insert_twice(door_pool: DriverPool) -> None:
    async with DriverUnitOfWork(door_pool) as uow:
        await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ('a'), ('a')")


async def test_a_failed_statement_leaves_a_usable_pool(
    door_pool: DriverPool, engine: AsyncEngine
) -> None:
    with pytest.raises(asyncpg.UniqueViolationError):
        await _insert_twice(door_pool)
    for value in ("b", "c", "d", "e"):  # more units than the pool holds: none is broken
        async with DriverUnitOfWork(door_pool) as uow:
            await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", value)
            await uow.commit()
    assert await _values(engine) == {"b", "c", "d", "e"}


async def test_dropped_connections_cost_one_unit_at_most(
    door_pool: DriverPool, engine: AsyncEngine
) -> None:
    # Fill the pool with three idle connections, then have the server drop all of them.
    units = [DriverUnitOfWork(door_pool) for _ in range(3)]
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
    kept = set()
    for value in ("x", "y", "z"):
        try:
            async with DriverUnitOfWork(door_pool) as uow:
                await uow.driver.execute(f"INSERT INTO {TABLE} VALUES ($1)", value)
                await uow.commit()
            kept.add(value)
        except DRIVER_ERRORS:
            assert value == "x"  # only a first unit may still find a dead connection
    assert kept >= {"y", "z"}
    assert await _values(engine) == kept


async def _commit_fails_and_is_swallowed(door_pool: DriverPool) -> int:
    async with DriverUnitOfWork(door_pool) as uow:
        pid: int = await uow.driver.fetchval("SELECT pg_backend_pid()")
        await uow.driver.execute(f"INSERT INTO {DEFERRED} VALUES (1), (1)")
        with contextlib.suppress(asyncpg.UniqueViolationError):
            await uow.commit()  # the deferred check fails here; the caller goes on
    return pid


async def test_a_connection_whose_commit_failed_never_goes_back(
    door_pool: DriverPool, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE IF EXISTS {DEFERRED}"))
        await conn.execute(
            text(f"CREATE TABLE {DEFERRED} (v int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        )
    failed_pid = await _commit_fails_and_is_swallowed(door_pool)
    async with DriverUnitOfWork(door_pool) as uow:
        assert await uow.driver.fetchval("SELECT pg_backend_pid()") != failed_pid
