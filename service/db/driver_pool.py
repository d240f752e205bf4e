"""A few driver (asyncpg) connections for the webhook door's claim, outside SQLAlchemy's pool.

Checking a connection out of SQLAlchemy's pool and back in, through its async adaption, cost
about as much CPU as the door's whole claim transaction (measured: 250-330 us more per
transaction than on a connection held directly). The door needs none of what that pool adds: it
runs one kind of transaction, through `DriverUnitOfWork`, on at most a handful of connections.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import asyncpg

# After these the server is gone for every connection (a restart, a failover, connections
# terminated): the idle ones are dropped too, so one dead connection costs one failed claim.
DISCONNECTS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    # The server's "terminating connection" notice can reach an idle connection before the
    # socket's end does: the next statement then finds the protocol in an error state.
    asyncpg.InternalClientError,
    OSError,
)


def driver_dsn(url: str) -> str:
    """The driver's DSN for a SQLAlchemy URL (`postgresql+asyncpg://` -> `postgresql://`)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql{sep}{rest}" if scheme.startswith("postgresql") else url


class DriverPool:
    """At most `size` connections in use at once; idle ones are kept for reuse."""

    def __init__(self, dsn: str, *, size: int, connect_timeout: float = 10.0) -> None:
        self._dsn = dsn
        self._slots = asyncio.Semaphore(size)
        self._idle: deque[Any] = deque()
        self._connect_timeout = connect_timeout
        self._closed = False

    async def acquire(self) -> Any:
        if self._closed:
            raise RuntimeError("the driver pool is closed")
        await self._slots.acquire()
        try:
            while self._idle:
                connection = self._idle.pop()
                if not connection.is_closed():
                    return connection
            return await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: Any, failure: BaseException | None = None) -> None:
        """Gives a connection back; one that failed (`failure`) is closed instead, and after a
        disconnect every idle connection with it."""
        self._slots.release()
        if failure is None and not self._closed and not connection.is_closed():
            self._idle.append(connection)
            return
        connection.terminate()
        if isinstance(failure, DISCONNECTS):
            while self._idle:
                self._idle.pop().terminate()

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            connection = self._idle.pop()
            try:
                await asyncio.wait_for(connection.close(), timeout=2)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                connection.terminate()
