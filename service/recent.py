"""A result reused for a short while: what `/readyz` and `/metrics` read from the database.

Probes and scrapers (several Prometheus servers, a probe per replica) would otherwise query the
database on every request. Callers that arrive while a read is under way share it, so a burst of
scrapes costs one query; a read the caller abandons (a client that hung up) still completes for
the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Recent(Generic[T]):
    """`fetch()`'s result, reused for `ttl` seconds after it arrives when `reuse(result)` says
    so (e.g. only a healthy answer: a failure is read afresh, so recovery shows at once). A
    fetch that raises is not kept: every caller sharing it sees the error."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[T]],
        ttl: float,
        *,
        reuse: Callable[[T], bool] = lambda _: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._reuse = reuse
        self._clock = clock
        self._kept: tuple[T, float] | None = None  # the result and when it expires
        self._pending: asyncio.Future[T] | None = None

    async def get(self) -> T:
        if self._kept is not None and self._clock() < self._kept[1]:
            return self._kept[0]
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._refresh())
        return await asyncio.shield(self._pending)

    async def _refresh(self) -> T:
        try:
            result = await self._fetch()
            self._kept = (result, self._clock() + self._ttl) if self._reuse(result) else None
            return result
        finally:
            self._pending = None
