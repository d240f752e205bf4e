"""Durable ingest: every new event is acknowledged by Kafka before the caller may answer 2xx.

The dedupe record of an event id is the event-log row, claimed by `INSERT ... ON CONFLICT DO
NOTHING` inside a transaction that stays open while the events are published:

- it commits only once Kafka has acknowledged (acks=all) every event it claimed, so a dedupe record
  never outlives a failed publish: a rollback, or a crash, takes it away with the transaction;
- a concurrent delivery of the same id waits on the row lock and then sees a duplicate, so two
  concurrent deliveries publish once;
- after a partial failure the acknowledged events' rows are kept and the others released, so the
  sender's retry republishes only what is not in Kafka.

aiokafka's idempotent producer retries a buffered record until the broker takes it, even after we
gave up waiting. Such sends stay in an in-flight registry: a retry of the same event joins the send
already on its way instead of sending a second copy, and a send that lands late writes its dedupe
row itself. So a broker outage neither loses an event nor puts it twice on the topic (within one
API process; across replicas the consumer's event-id dedupe absorbs the rare second copy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, TIMESTAMP
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas import kafka_headers as h
from service.db.uow import UnitOfWork
from service.kafka.gateway import KafkaGateway
from service.kafka.topics import CLEVER_EVENTS
from service.metrics import EVENTS, PUBLISH_LATENCY
from service.webhooks.parse import ParsedEvent

log = logging.getLogger(__name__)

_CLAIM = text(
    """
    INSERT INTO event_log (event_id, type, district_id, source, status, received_at)
    SELECT id, type, district, :source, 'accepted', :received_at
    FROM unnest(:ids, :types, :districts) AS claim(id, type, district)
    ORDER BY id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
    """
).bindparams(
    bindparam("ids", type_=ARRAY(Text)),
    bindparam("types", type_=ARRAY(Text)),
    bindparam("districts", type_=ARRAY(Text)),
    bindparam("received_at", type_=TIMESTAMP(timezone=True)),
)
_RELEASE = text("DELETE FROM event_log WHERE event_id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(Text))
)


class Unavailable(Exception):
    """A dependency could not do its part in time; nothing unacknowledged was recorded."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency
        self.detail = detail


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    accepted_ids: tuple[str, ...]


@dataclass(frozen=True)
class Delivery:
    """Where a body came from: the door, the delivery id and the trace it belongs to."""

    source: str
    delivery_id: str
    traceparent: str
    received_at: datetime


SendFuture = asyncio.Future[Any]


async def _claim(
    connection: AsyncConnection, events: Sequence[ParsedEvent], delivery: Delivery
) -> set[str]:
    # Sorted ids: concurrent bodies sharing ids lock rows in the same order, so never deadlock.
    rows = sorted((p.event.id, p.event.type, p.event.district_id) for p in events)
    result = await connection.execute(
        _CLAIM,
        {
            "ids": [r[0] for r in rows],
            "types": [r[1] for r in rows],
            "districts": [r[2] for r in rows],
            "source": delivery.source,
            "received_at": delivery.received_at,
        },
    )
    return {row[0] for row in result}


class Ingestor:
    def __init__(
        self,
        engine: AsyncEngine,
        kafka: KafkaGateway,
        *,
        timeout: float,
        topic: str = CLEVER_EVENTS.name,
    ) -> None:
        self._engine = engine
        self._kafka = kafka
        self._timeout = timeout
        self._topic = topic
        self._inflight: dict[str, SendFuture] = {}
        self._background: set[asyncio.Task[None]] = set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def ingest(self, events: Sequence[ParsedEvent], delivery: Delivery) -> IngestResult:
        unique: dict[str, ParsedEvent] = {}
        for parsed in events:
            unique.setdefault(parsed.event.id, parsed)
        producer = self._kafka.producer
        if producer is None:
            raise Unavailable("kafka", "not connected")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout

        async with AsyncExitStack() as stack:
            try:
                # Connecting counts against the deadline too: a hanging database is bounded.
                async with asyncio.timeout_at(deadline):
                    uow = await stack.enter_async_context(UnitOfWork(self._engine))
                    claimed = await _claim(uow.connection, list(unique.values()), delivery)
            except (TimeoutError, SQLAlchemyError, OSError) as exc:
                raise Unavailable("database", type(exc).__name__) from None

            futures = await self._publish(
                producer, [unique[i] for i in sorted(claimed)], delivery, deadline
            )
            acked = {eid for eid, fut in futures.items() if _succeeded(fut)}
            if len(acked) < len(claimed):
                await self._keep_acknowledged(uow, claimed - acked, bool(acked))
                for eid in claimed - acked:
                    self._watch_late_delivery(eid, unique[eid], delivery)
                for eid in acked:
                    self._inflight.pop(eid, None)
                raise Unavailable("kafka", f"{len(claimed) - len(acked)} event(s) not acknowledged")
            try:
                await uow.commit()
            except (SQLAlchemyError, OSError) as exc:
                # Published, not recorded: the retry publishes again (a duplicate copy the
                # consumer's dedupe absorbs), but nothing is lost.
                raise Unavailable("database", type(exc).__name__) from None

        for eid in claimed:
            self._inflight.pop(eid, None)
        duplicates = len(events) - len(claimed)
        EVENTS.labels("accepted").inc(len(claimed))
        EVENTS.labels("duplicate").inc(duplicates)
        return IngestResult(len(claimed), duplicates, tuple(sorted(claimed)))

    async def _publish(
        self,
        producer: AIOKafkaProducer,
        events: Sequence[ParsedEvent],
        delivery: Delivery,
        deadline: float,
    ) -> dict[str, SendFuture]:
        """Sends what is not already on its way; waits for acknowledgements until `deadline`."""
        futures: dict[str, SendFuture] = {}
        common = [
            (h.SOURCE, delivery.source.encode()),
            (h.RECEIVED_AT, delivery.received_at.isoformat().encode()),
            (h.TRACEPARENT, delivery.traceparent.encode()),
            ("webhook-id", delivery.delivery_id.encode()),
        ]
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                for parsed in events:
                    eid = parsed.event.id
                    earlier = self._inflight.get(eid)
                    if earlier is not None and not (earlier.done() and not _succeeded(earlier)):
                        futures[eid] = earlier  # an earlier attempt's send, still on its way
                        continue
                    futures[eid] = self._inflight[eid] = await producer.send(
                        self._topic,
                        value=parsed.raw,
                        key=parsed.event.district_id.encode(),
                        headers=[
                            (h.EVENT_ID, eid.encode()),
                            (h.EVENT_TYPE, parsed.event.type.encode()),
                            *common,
                        ],
                    )
        except Exception as exc:
            # Buffer full or no metadata in time: what was sent so far is still waited for.
            log.warning("publish stopped early", extra={"error": type(exc).__name__})
        pending = [f for f in futures.values() if not f.done()]
        remaining = deadline - asyncio.get_running_loop().time()
        if pending and remaining > 0:
            await asyncio.wait(pending, timeout=remaining)
        if futures and all(_succeeded(f) for f in futures.values()):
            PUBLISH_LATENCY.observe(time.perf_counter() - started)
        return futures

    async def _keep_acknowledged(
        self, uow: UnitOfWork, unacknowledged: set[str], any_acked: bool
    ) -> None:
        """Releases the unacknowledged claims; commits the acknowledged ones if there are any."""
        if not any_acked:
            return  # leaving the unit of work rolls every claim back
        try:
            await uow.connection.execute(_RELEASE, {"ids": sorted(unacknowledged)})
            await uow.commit()
        except (SQLAlchemyError, OSError):
            log.warning(
                "could not record acknowledged events of a failed body; "
                "a retry publishes them again"
            )

    def _watch_late_delivery(self, eid: str, parsed: ParsedEvent, delivery: Delivery) -> None:
        future = self._inflight.get(eid)
        if future is None:
            return  # never sent (publish stopped early): the retry sends it
        if future.done() and not _succeeded(future):
            self._inflight.pop(eid, None)
            return

        def landed(done: SendFuture) -> None:
            if not _succeeded(done):
                if self._inflight.get(eid) is done:
                    del self._inflight[eid]
                return
            task = asyncio.create_task(self._record_late(eid, parsed, delivery, done))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        future.add_done_callback(landed)

    async def _record_late(
        self, eid: str, parsed: ParsedEvent, delivery: Delivery, future: SendFuture
    ) -> None:
        try:
            async with UnitOfWork(self._engine) as uow:
                await _claim(uow.connection, [parsed], delivery)
                await uow.commit()
        except (SQLAlchemyError, OSError):
            # The registry keeps the landed send: a retry reuses it and records the row itself.
            log.warning("late delivery not recorded yet", extra={"event_id": eid})
            return
        if self._inflight.get(eid) is future:
            del self._inflight[eid]
        log.info(
            "late delivery recorded",
            extra={"event_id": eid, "district_id": parsed.event.district_id},
        )

    async def drain(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _succeeded(future: SendFuture) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def now_utc() -> datetime:
    return datetime.now(UTC)
