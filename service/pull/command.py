"""`roster backfill DISTRICT_ID`: request a backfill (or follow the one running), and run it here
when no poller will.

- The request is a `running` row of `backfills` (reason `cli`); while one already runs for the
  district, the command follows that one instead (its own flags then do not apply).
- Each round (every `poll_seconds`) it reads the row and shows it. While the row is running and
  nobody attends it (never started, or its runner's heartbeat is stale) and no other process
  holds the district's lease (`sync_districts.lease_owner`, as a poller does), the command takes
  the lease and runs the backfill itself, renewing the lease every third of
  `ROSTER_POLL_LEASE_SECONDS`. If it loses the lease the run stops (the row stays running, the
  new holder resumes it) and the command goes on following.
- It ends when the row ends: `succeeded`, `guarded` or `failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.clever.client import CleverClient, new_http_client
from service.clever.tokens import Tokens
from service.db.driver_pool import DriverPool, driver_dsn
from service.db.engine import database_url, make_engine
from service.db.uow import UnitOfWork
from service.kafka.config import bootstrap_servers, topic_durability
from service.kafka.gateway import KafkaGateway
from service.pull import backfills
from service.pull import store as sync
from service.pull.backfill import BackfillTakenOver, LeaseLost, run_backfill
from service.settings import Settings
from service.webhooks.ingest import Ingestor

log = logging.getLogger(__name__)

KAFKA_CONNECT_SECONDS = 60.0


class NoToken(Exception):
    """Neither this process nor any poller knows a token for the district."""


@dataclass
class Progress:
    """What the display shows each round."""

    backfill: dict[str, Any]
    joined: bool  # following a backfill that was already running
    note: str  # who runs it, or what it waits for
    previous: dict[str, Any] | None  # the district's last finished backfill (an ETA's total)


Show = Callable[[Progress], None]


def cli_runner_id() -> str:
    return f"cli:{socket.gethostname()}:{os.getpid()}"


async def backfill_command(
    settings: Settings,
    district_id: str,
    *,
    archive_missing: bool,
    force: bool,
    show: Show,
    me: str | None = None,
    poll_seconds: float = 0.5,
) -> dict[str, Any]:
    """Requests (or follows) the district's backfill until it ends; returns the ended row."""
    me = me or cli_runner_id()
    engine = make_engine(database_url(settings), pool_size=3)
    try:
        async with _Runner(settings, engine, me) as runner:
            first, joined = await _request(engine, settings, district_id, archive_missing, force)
            backfill_id: str = first["id"]
            async with engine.connect() as conn:
                last = await backfills.last_finished(conn, district_id)
            previous = None if last is None else backfills.as_json(last)
            note = "requested"
            while True:
                async with engine.connect() as conn:
                    row = await backfills.get(conn, backfill_id)
                    holder = await sync.lease_holder(conn, district_id)
                    waiting = await backfills.pending(conn, [district_id])
                assert row is not None
                if row["status"] != "running":
                    show(Progress(backfills.as_json(row), joined, "ended", previous))
                    return backfills.as_json(row)
                unattended = any(r["id"] == backfill_id for r in waiting)
                if runner.running:
                    note = "running here"
                elif unattended and holder in (None, me):
                    note = await runner.start(backfill_id, district_id)
                elif unattended:
                    note = f"waiting for {holder} (it holds the district's lease)"
                else:
                    note = f"run by {row['runner']}"
                show(Progress(backfills.as_json(row), joined, note, previous))
                await runner.wait(poll_seconds)
    finally:
        await engine.dispose()


async def _request(
    engine: AsyncEngine,
    settings: Settings,
    district_id: str,
    archive_missing: bool,
    force: bool,
) -> tuple[dict[str, Any], bool]:
    """The new backfill, or the one already running (then True)."""
    for _ in range(3):  # the running one may end between the insert and the read
        async with UnitOfWork(engine) as uow:
            conn = uow.connection
            if not await backfills.has_token(conn, settings, district_id):
                raise NoToken(f"no token is known for district {district_id}")
            row = await backfills.insert(
                conn, district_id, reason="cli", archive_missing=archive_missing, force=force
            )
            if row is not None:
                await uow.commit()
                return backfills.as_json(row), False
            running = await backfills.running(conn, district_id)
            if running is not None:
                return backfills.as_json(running), True
    raise RuntimeError(f"could not request a backfill of district {district_id}")


class _Runner:
    """Runs the backfill in this process when nobody else will: the lease, the resources a run
    needs (opened on first use only), and the run as a background task."""

    def __init__(self, settings: Settings, engine: AsyncEngine, me: str) -> None:
        self._settings = settings
        self._engine = engine
        self._me = me
        self._task: asyncio.Task[Any] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._resources: contextlib.AsyncExitStack | None = None
        self._client: CleverClient | None = None
        self._ingestor: Ingestor | None = None
        self._wake = asyncio.Event()
        self._district = ""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def __aenter__(self) -> _Runner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop_run()
        if self._resources is not None:
            await self._resources.aclose()

    async def wait(self, seconds: float) -> None:
        """Until the next round, or until the run here ends."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
        if self._task is not None and self._task.done():
            task, self._task = self._task, None
            await self._stop_lease()
            exc = task.exception() if not task.cancelled() else None
            if isinstance(exc, (BackfillTakenOver, LeaseLost)):
                log.warning("the backfill went on elsewhere", extra={"error": str(exc)})
            elif exc is not None:
                raise exc

    async def start(self, backfill_id: str, district_id: str) -> str:
        """Takes the district's lease and starts the run; what to show (why not, if not)."""
        ttl = self._settings.poll_lease_seconds
        tokens = await self._open()
        token = tokens.get(district_id)
        if token is None:
            return "waiting for a poller (this process has no token for the district)"
        async with UnitOfWork(self._engine) as uow:
            held = await sync.hold_lease(uow.connection, self._me, district_id, ttl, token.source)
            await uow.commit()
        if not held:
            return "waiting: another process took the district's lease"
        self._lease_task = asyncio.create_task(self._keep_lease(district_id, ttl))
        assert self._client is not None and self._ingestor is not None
        self._task = asyncio.create_task(
            run_backfill(
                backfill_id,
                engine=self._engine,
                client=self._client,
                ingestor=self._ingestor,
                settings=self._settings,
                runner=self._me,
                lease_owner=self._me,
            )
        )
        self._task.add_done_callback(lambda _: self._wake.set())
        self._district = district_id
        return "running here"

    async def _keep_lease(self, district_id: str, ttl: float) -> None:
        """Renews the lease every ttl/3; losing it stops the run (the new holder resumes it)."""
        while True:
            await asyncio.sleep(ttl / 3)
            async with UnitOfWork(self._engine) as uow:
                held = await sync.hold_lease(uow.connection, self._me, district_id, ttl, None)
                await uow.commit()
            if not held and self._task is not None:
                log.warning("lost the district's lease; the backfill stops here")
                self._task.cancel()
                return

    async def _stop_lease(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
            self._lease_task = None
            async with UnitOfWork(self._engine) as uow:
                await sync.let_go(uow.connection, self._me, self._district)
                await uow.commit()

    async def _stop_run(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._stop_lease()

    async def _open(self) -> Tokens:
        """The Clever client and the Ingestor, opened once."""
        if self._resources is not None:
            assert self._client is not None
            await self._client.tokens.discover()
            return self._client.tokens
        stack = contextlib.AsyncExitStack()
        self._resources = stack
        settings = self._settings
        http = new_http_client(settings)
        stack.push_async_callback(http.aclose)
        tokens = Tokens(settings, http)
        await tokens.discover()
        self._client = CleverClient(settings, tokens, process_id=self._me, http=http)
        gateway = KafkaGateway(bootstrap_servers(settings), durability=topic_durability(settings))
        gateway.start()
        stack.push_async_callback(gateway.stop)
        pool = DriverPool(driver_dsn(database_url(settings)), size=3)
        stack.push_async_callback(pool.close)
        ingestor = Ingestor(
            pool,
            gateway,
            timeout=settings.publish_timeout_seconds,
            database_timeout=settings.webhook_database_timeout_seconds,
        )
        stack.push_async_callback(ingestor.drain)
        async with asyncio.timeout(KAFKA_CONNECT_SECONDS):
            await gateway.connected.wait()
        self._ingestor = ingestor
        return tokens
