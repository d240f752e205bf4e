"""The outbox relay: publishes committed outbox rows to their topics, then marks them sent.

Each round, in one transaction: lock the free shards (`FOR UPDATE SKIP LOCKED`), read their oldest
unsent rows in id order, send them in that order with the idempotent producer, wait for every
acknowledgement, mark them sent, commit. So:
- what is published was committed (only committed rows are visible);
- each key's messages go out in commit order (one relay per shard at a time, one partition per key);
- a relay dying after the send but before the commit re-publishes those rows from the next relay:
  a duplicate with the same sequence number, never a loss;
- a relay that cannot reach Kafka rolls back and tries again; nothing is marked sent unsent.
Between rounds the relay sleeps until a NOTIFY from a committing writer, or the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings.kafka import to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.roster_alerts import ALERTS_SOURCE, ALERTS_TOPIC
from schemas.roster_changes import CHANGES_SOURCE, CHANGES_TOPIC
from service import failpoints
from service.db.uow import UnitOfWork
from service.outbox import store
from service.outbox.metrics import BACKLOG, PRUNED, RELAY_LATENCY, RELAYED

log = logging.getLogger(__name__)

_FORMAT = JSONFormat()
SOURCES = {CHANGES_TOPIC: CHANGES_SOURCE, ALERTS_TOPIC: ALERTS_SOURCE}


def kafka_message(row: store.Pending) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The row as a CloudEvent in Kafka binary mode: (key, value, headers)."""
    event = CloudEvent(
        attributes={
            "id": f"{row.key}.{row.sequence}",  # unique per source; the same on a re-publish
            "source": SOURCES.get(row.topic, f"/roster-sync/{row.topic}"),
            "type": row.type,
            "subject": row.key,
            "time": row.written_at,
            "datacontenttype": "application/json",
            "sequence": str(row.sequence),
            "districtid": row.district_id,
        },
        data=row.data,
    )
    message = to_binary(event, _FORMAT, key_mapper=lambda _: row.key)
    return row.key.encode(), message.value, list(message.headers.items())


class Relay:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        *,
        batch: int = 2000,
        poll_seconds: float = 1.0,
        publish_timeout: float = 10.0,
        retention_seconds: int = 7 * 24 * 3600,
        housekeeping_seconds: float = 5.0,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.publish_timeout = publish_timeout
        self.retention_seconds = retention_seconds
        self.housekeeping_seconds = housekeeping_seconds
        self.published = 0
        self._wake = asyncio.Event()
        self._listener: AsyncConnection | None = None
        self._raw: Any = None

    async def relay_once(self) -> int:
        """One round; returns how many rows it published."""
        async with UnitOfWork(self.engine) as uow:
            rows = await store.claim(uow.connection, self.batch)
            if not rows:
                return 0
            await self._publish(rows)
            failpoints.hit("relay.after_publish")
            await store.mark_sent(uow.connection, [r.id for r in rows])
            await uow.commit()
        now = datetime.now(UTC)
        for row in rows:
            RELAYED.labels(row.topic).inc()
            RELAY_LATENCY.observe(max(0.0, (now - row.written_at).total_seconds()))
        self.published += len(rows)
        return len(rows)

    async def _publish(self, rows: Sequence[store.Pending]) -> None:
        # Sent one after another (each `send` only queues), so a partition receives each key's
        # rows in id order; then every acknowledgement is awaited, within a bound.
        sends = []
        for row in rows:
            key, value, headers = kafka_message(row)
            sends.append(await self.producer.send(row.topic, value, key=key, headers=headers))
        await asyncio.wait_for(asyncio.gather(*sends), timeout=self.publish_timeout)

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.1
        next_housekeeping = 0.0
        while not stop.is_set():
            try:
                await self._ensure_listener()
                self._wake.clear()  # a NOTIFY from here on triggers another round
                published = await self.relay_once()
                if time.monotonic() >= next_housekeeping:
                    await self.housekeeping()
                    next_housekeeping = time.monotonic() + self.housekeeping_seconds
                delay = 0.1
            except Exception as exc:
                log.warning(
                    "relay round failed; retrying",
                    extra={
                        "error": type(exc).__name__,
                        "detail": str(exc)[:200],
                        "retry_in_s": delay,
                    },
                )
                await self._drop_listener()
                await _wait(stop, delay)
                delay = min(delay * 2, 10.0)
                continue
            if published < self.batch:
                await _wait_any(stop, self._wake, self.poll_seconds)
        await self._drop_listener()
        log.info("relay stopped", extra={"published": self.published})

    async def housekeeping(self, *, max_rounds: int = 20) -> None:
        """Prunes rows sent longer ago than the retention period, oldest first, in bounded
        transactions (up to `max_rounds` of 10,000 rows, enough to follow the outbox at tens of
        thousands of rows a second), and samples the backlog."""
        for _ in range(max_rounds):
            async with UnitOfWork(self.engine) as uow:
                pruned = await store.prune(uow.connection, self.retention_seconds)
                await uow.commit()
            PRUNED.inc(pruned)
            if pruned < 10_000:
                break
        async with self.engine.connect() as conn:
            BACKLOG.set(await store.backlog(conn))

    async def _ensure_listener(self) -> None:
        """A connection kept LISTENing for writers' NOTIFY; re-opened after any failure."""
        if self._listener is not None:
            if not self._raw.is_closed():
                return
            await self._drop_listener()  # the server closed it (a restart): LISTEN again
        conn = await self.engine.connect()
        try:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            await raw.add_listener(store.NOTIFY_CHANNEL, lambda *_: self._wake.set())
        except BaseException:
            await conn.close()
            raise
        self._listener, self._raw = conn, raw
        self._wake.set()  # rows may have been committed while nobody listened

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # not back to the pool: it still LISTENs
                await conn.close()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
