"""District leases: which poller polls which district, so that one poller at a time polls each.

Every `ttl / 3` seconds (`ROSTER_POLL_LEASE_SECONDS` = ttl) a poller runs one lease round, one
transaction:
1. its heartbeat in `pollers`;
2. it renews every lease it holds (to now + ttl, the database's clock);
3. its fair share is ceil(districts with a token / pollers seen within ttl);
4. below its share, it claims free or expired leases (`FOR UPDATE SKIP LOCKED`, so two pollers
   claiming at once never take one district twice).
After the commit it starts a task for each district claimed and stops the task of each lease it
lost (cancelled at once: another poller may hold it). Above its share, it stops the tasks of the
extra districts (they finish the page in hand, bounded) and only then releases their leases, so
the poller that claims one next never overlaps with it.

Locally a lease is valid until the round's start + ttl (measured before the renewal was sent,
so never later than the database's expiry): a district task checks it before each request and
stops when it has passed, e.g. when the database stopped answering the rounds. Correctness never
rests on that timing: every cursor or state write is fenced on the lease (service/pull/store.py).

Takeover bound: a dead poller's leases expire at most ttl after its last renewal, and its
heartbeat stops counting at the same moment (it was written in the same transaction), so the
survivors' next round, at most ttl / 3 later, claims them: a district is polled again within
ttl + ttl / 3 of the dead poller's last renewal, i.e. at most ttl after its death, plus one
round's own time. An orderly stop (SIGTERM) releases its leases at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.uow import UnitOfWork
from service.pull import metrics, store

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Lease:
    """A district this poller holds, as its task sees it."""

    district_id: str
    valid_until: float  # the event loop's clock
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def valid(self) -> bool:
        """Held and not asked to stop: a task makes its next request only while this is true."""
        return not self.stopping.is_set() and asyncio.get_running_loop().time() < self.valid_until

    async def sleep(self, seconds: float) -> None:
        """Waits `seconds`, or less if the task is asked to stop."""
        if seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        except TimeoutError:
            pass


@dataclass(frozen=True)
class Round:
    """What a lease round decided (for logs and tests)."""

    share: int
    live_pollers: int
    held: frozenset[str]
    claimed: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    released: tuple[str, ...] = ()


Start = Callable[[Lease], None]
# Stops a district's task: graceful (it finishes the page in hand, within a bound) or at once.
Stop = Callable[[str, bool], Awaitable[None]]
# Which extra district to give up first: the lowest rank (an idle district before a busy one).
Rank = Callable[[str], int]


class LeaseKeeper:
    def __init__(
        self,
        engine: AsyncEngine,
        me: str,
        ttl: float,
        *,
        start: Start,
        stop: Stop,
        rank: Rank = lambda _district: 0,
    ) -> None:
        self._engine = engine
        self.me = me
        self.ttl = ttl
        self._start = start
        self._stop = stop
        self._rank = rank
        self.held: dict[str, Lease] = {}

    @property
    def period(self) -> float:
        return self.ttl / 3

    async def round(self, *, claiming: bool = True) -> Round:
        """One lease round (see the module). `claiming=False` (no tokens here) claims nothing
        and gives up what it holds. Raises on a database failure (the caller retries next
        period); the leases' local validity is then not extended."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(self.ttl), UnitOfWork(self._engine) as uow:
            conn = uow.connection
            if claiming:
                await store.heartbeat(conn, self.me)
            else:  # a poller without tokens does not count toward the others' fair share
                await store.forget_poller(conn, self.me)
            await store.release(conn, self.me, ())  # those whose district lost its token
            renewed = await store.renew(conn, self.me, self.ttl)
            live = max(1, await store.live_pollers(conn, self.ttl))
            share = math.ceil(await store.with_token(conn) / live) if claiming else 0
            claimed: list[str] = []
            if len(renewed) < share:
                claimed = await store.claim(conn, self.me, share - len(renewed), self.ttl)
            by_state = await store.by_state(conn)
            await uow.commit()
        valid_until = started + self.ttl
        for state, count in by_state.items():
            metrics.DISTRICTS.labels(state).set(count)

        known = set(self.held)
        lost = sorted(known - renewed)
        for district_id in lost:
            await self._drop(district_id, graceful=False)
        mine = sorted(renewed | set(claimed))
        for district_id in mine:
            lease = self.held.get(district_id)
            if lease is None:
                lease = self.held[district_id] = Lease(district_id, valid_until)
                self._start(lease)
            else:
                lease.valid_until = valid_until
        extra = len(mine) - share
        released: list[str] = []
        if extra > 0:
            released = sorted(sorted(self.held, key=self._rank)[:extra])
            await self.release(released)
        metrics.LEASES_HELD.set(len(self.held))
        decided = Round(
            share,
            live,
            frozenset(self.held),
            tuple(sorted(set(mine) - known)),
            tuple(lost),
            tuple(released),
        )
        if decided.claimed or decided.lost or decided.released:
            log.info(
                "district leases changed",
                extra={
                    "poller": self.me,
                    "share": share,
                    "live_pollers": live,
                    "held": len(self.held),
                    "claimed": list(decided.claimed),
                    "lost": list(decided.lost),
                    "released": list(decided.released),
                },
            )
        return decided

    async def release(self, district_ids: list[str]) -> None:
        """Stops these districts' tasks (gracefully, bounded), then gives up their leases."""
        for district_id in district_ids:
            await self._drop(district_id, graceful=True)
        if district_ids:
            async with asyncio.timeout(self.ttl), UnitOfWork(self._engine) as uow:
                await store.release(uow.connection, self.me, district_ids)
                await uow.commit()

    async def expire(self) -> None:
        """After a failed round: stops the tasks whose lease is no longer valid locally (the
        database may already have given the district to another poller)."""
        now = asyncio.get_running_loop().time()
        for district_id in [d for d, lease in self.held.items() if lease.valid_until <= now]:
            await self._drop(district_id, graceful=False)
        metrics.LEASES_HELD.set(len(self.held))

    async def release_all(self) -> None:
        """An orderly stop: every task stopped (gracefully, bounded), every lease given up and
        this poller's heartbeat removed, so the others take its districts at their next round."""
        for district_id in sorted(self.held):
            await self._drop(district_id, graceful=True)
        async with asyncio.timeout(self.ttl), UnitOfWork(self._engine) as uow:
            await store.release_all(uow.connection, self.me)
            await store.forget_poller(uow.connection, self.me)
            await uow.commit()
        metrics.LEASES_HELD.set(0)

    async def _drop(self, district_id: str, *, graceful: bool) -> None:
        lease = self.held.pop(district_id, None)
        if lease is None:
            return
        lease.stopping.set()
        await self._stop(district_id, graceful)
        metrics.forget(district_id)

    async def run(self, stop: asyncio.Event, claiming: Callable[[], bool]) -> None:
        """Lease rounds every ttl / 3 until `stop`; a failed round is logged and retried."""
        while not stop.is_set():
            try:
                await self.round(claiming=claiming())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "lease round failed; retrying",
                    extra={"poller": self.me, "error": type(exc).__name__},
                )
                await self.expire()
            try:
                async with asyncio.timeout(self.period):
                    await stop.wait()
            except TimeoutError:
                pass
