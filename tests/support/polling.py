"""The poller on the real broker and database against the Clever simulator over HTTP (test
helpers): in-process, built by the process's own wiring (service/pull/main.py), or as a
`roster poll` process."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.simulator import RunningSimulator
from service.clever import RetryPolicy
from service.db.tables import event_log
from service.kafka.config import producer_options
from service.kafka.topics import ensure_topics
from service.paths import project_root
from service.pull import store
from service.pull.main import Polling
from service.pull.store import SyncDistrict
from service.settings import Settings
from service.worker import Opened
from tests.support.services import Services

log = logging.getLogger(__name__)

# Quick retries: a test's injected 500s and timeouts are over in well under a second.
QUICK = RetryPolicy(attempts=6, first=0.05, most=0.3)


def poller_settings(services: Services, sim: RunningSimulator, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": services.database_url,
        "kafka_bootstrap_servers": services.kafka_bootstrap,
        **sim.settings_values(),
        "poll_interval_seconds": 0.2,
        "poll_lease_seconds": 3.0,
        "clever_timeout_seconds": 2.0,
        "publish_timeout_seconds": 5.0,
        "poller_metrics_port": 0,
        "poll_max_concurrent_districts": 20,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@asynccontextmanager
async def running_poller(
    services: Services,
    engine: AsyncEngine,
    settings: Settings,
    *,
    producer: AIOKafkaProducer | None = None,
    discovery_seconds: float = 60.0,
) -> AsyncIterator[Polling]:
    """A poller in this process (as `roster poll` builds it), stopped (its leases released) on
    exit. `producer`: one to publish with (started or not) instead of a fresh started one; it
    is stopped on exit too."""
    await ensure_topics(services.kafka_bootstrap)
    options = producer_options(services.kafka_bootstrap)
    if producer is None:
        producer = AIOKafkaProducer(**options)
        await producer.start()
    opened = Opened(services.kafka_bootstrap, engine, producer, options)
    polling = Polling(settings, opened, retry=QUICK, discovery_seconds=discovery_seconds)
    stop = asyncio.Event()
    task = asyncio.create_task(polling.run(stop))
    try:
        yield polling
    finally:
        stop.set()
        try:
            async with asyncio.timeout(30):
                await task
        finally:
            for step in polling.closing():  # its producer's stop too
                try:
                    await asyncio.wait_for(step, 10)
                except Exception as exc:  # a producer never started may complain
                    log.warning("closing step failed: %r", exc)


async def sync_row(engine: AsyncEngine, district_id: str) -> SyncDistrict | None:
    async with engine.connect() as conn:
        return await store.district(conn, district_id)


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Polls `check` until it is true; fails naming `what` after `timeout` (a guard only)."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 (a database or process, no event)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def cursor_at(engine: AsyncEngine, district_id: str, event_id: str | None) -> bool:
    row = await sync_row(engine, district_id)
    return row is not None and row.sync_state == "polling" and row.cursor_event_id == event_id


async def polled(engine: AsyncEngine, district_id: str) -> bool:
    """The district was backfilled and its feed read to its end at least once."""
    row = await sync_row(engine, district_id)
    return row is not None and row.sync_state == "polling" and row.last_drained_at is not None


async def logged_events(engine: AsyncEngine, ids: set[str]) -> dict[str, tuple[str, str]]:
    """(source, status) of these event ids in the event log."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(event_log.c.event_id, event_log.c.source, event_log.c.status).where(
                event_log.c.event_id.in_(ids)
            )
        )
        return {r.event_id: (r.source, r.status) for r in rows}


async def lease_owners(engine: AsyncEngine, ids: list[str]) -> dict[str, str | None]:
    """Who holds each district's lease now (None: nobody, or expired)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, CASE WHEN lease_expires_at > now() THEN lease_owner END "
                "FROM sync_districts WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        )
        return {r[0]: r[1] for r in rows}


def poll_process(
    services: Services, settings: dict[str, str], log: Path, **env: str
) -> subprocess.Popen[bytes]:
    """`roster poll` as its own process; `settings` as ROSTER_* names; stderr goes to `log`."""
    full = dict(os.environ) | {
        "ROSTER_DATABASE_URL": services.database_url,
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "ROSTER_LOG_LEVEL": "INFO",
        "ROSTER_POLLER_METRICS_PORT": "0",
        **settings,
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service", "poll"],
        env=full,
        cwd=project_root(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def sim_env(sim: RunningSimulator, **values: Any) -> dict[str, str]:
    """The simulator's ROSTER_CLEVER_* settings and `values` as environment variables."""
    return {f"ROSTER_{k.upper()}": str(v) for k, v in {**sim.settings_values(), **values}.items()}
