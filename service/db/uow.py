"""The unit of work: the one place in the code base that commits a database transaction.

Repositories and rules receive `uow.connection` and only read and write through it; the caller that
owns the unit of work decides to `commit()`. Leaving the block without committing rolls back, so an
exception anywhere (a failed publish, a bad event) leaves no partial write behind.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from service.db.driver_pool import DriverPool

T = TypeVar("T")


def _opened(connection: T | None) -> T:
    if connection is None:
        raise RuntimeError("the unit of work is not open")
    return connection


class UnitOfWork:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._transaction: AsyncTransaction | None = None

    @property
    def connection(self) -> AsyncConnection:
        return _opened(self._connection)

    async def __aenter__(self) -> UnitOfWork:
        self._connection = await self._engine.connect()
        self._transaction = await self._connection.begin()
        return self

    async def commit(self) -> None:
        if self._transaction is None or not self._transaction.is_active:
            raise RuntimeError("no open transaction to commit")
        await self._transaction.commit()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._transaction is not None and self._transaction.is_active:
                await self._transaction.rollback()
        finally:
            if self._connection is not None:
                await self._connection.close()
            self._connection = self._transaction = None


# What a statement sent through the driver can raise when the database fails.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection the server dropped, noticed mid-statement
    OSError,
)


class DriverUnitOfWork:
    """A unit of work whose statements go straight to the driver (asyncpg), on a connection of a
    `DriverPool`: for the webhook door's claim, the hottest transaction there is. SQLAlchemy's
    execution layer cost about 300-450 us of CPU per door transaction (begin, one insert,
    commit), more than the driver's own work (about 300 us). The same rule as `UnitOfWork`:
    leaving without `commit()` rolls back. A connection whose statement failed or was cut short
    never goes back to the pool. `timeout` bounds the commit (it raises `TimeoutError`) and the
    rollback (the connection is then thrown away, which ends the transaction on the server).
    """

    def __init__(self, pool: DriverPool, *, timeout: float | None = None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._driver: Any = None
        self._transaction: Any = None
        self._finished = False
        self._failure: BaseException | None = None

    @property
    def driver(self) -> Any:
        """The asyncpg connection (statements take `$1`-style parameters)."""
        return _opened(self._driver)

    async def __aenter__(self) -> DriverUnitOfWork:
        self._driver = await self._pool.acquire()
        try:
            transaction = self._driver.transaction()
            await transaction.start()
        except BaseException as exc:
            self._release(exc)
            raise
        self._transaction = transaction
        return self

    async def commit(self) -> None:
        if self._transaction is None or self._finished:
            raise RuntimeError("no open transaction to commit")
        self._finished = True  # committed or not, the transaction is over
        try:
            async with asyncio.timeout(self._timeout):
                await self._transaction.commit()
        except BaseException as exc:
            self._failure = exc  # even if the caller goes on: the connection is suspect
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failure = self._failure or _driver_failure(exc)
        if failure is not None:
            self._release(failure)  # a statement failed or was cut short: never back to the pool
            return
        try:
            if self._transaction is not None and not self._finished:
                self._finished = True
                async with asyncio.timeout(self._timeout):
                    await self._transaction.rollback()
        except asyncio.CancelledError as cancelled:
            self._release(cancelled)
            raise
        except Exception as failure:
            # Closing the connection ends the transaction on the server just as well; whatever
            # the block raised goes on unchanged.
            self._release(failure)
            return
        self._release(None)

    def _release(self, failure: BaseException | None) -> None:
        driver, self._driver, self._transaction = self._driver, None, None
        if driver is not None:
            self._pool.release(driver, failure)


def _driver_failure(exc: BaseException | None) -> BaseException | None:
    """The driver failure or timeout behind `exc`: itself, or what it was raised from or while
    handling (the door turns a failed claim into its own `Unavailable`)."""
    for _ in range(5):  # a chain is short; never follow a cycle
        if exc is None:
            return None
        if isinstance(exc, (*DRIVER_ERRORS, TimeoutError, asyncio.CancelledError)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
