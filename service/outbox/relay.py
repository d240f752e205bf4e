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

A row the broker will never accept as it is (too large for its topic, an invalid topic name, a row
that cannot be encoded: `REFUSALS`) is parked with its error instead of failing every round for
ever; the others are published. The broker refuses a whole record batch for one such record, so
each refused row is tried again alone to find the one at fault. Transient errors (broker down,
leader moving, timeouts, authorisation) are never a reason to park: the round is retried.

The rows after a parked row go on, those of its key too, rather than waiting behind it. Every
message carries its entity's full state and a per-key sequence, and subscribers keep the highest
sequence per key (see the README), so the next message of the key supersedes the parked one: the
downstream state stays current instead of freezing until someone acts. The parked row leaves a gap
in its key's sequence; re-queued later, it arrives with its old sequence and a subscriber drops it
if a newer one was seen (a row retried alone after a newer row of its key went out in a later
record batch is dropped the same way).

Each message carries the trace context of its row (W3C, in `traceparent` and, as the CloudEvents
distributed-tracing extension, `ce_traceparent`): when the relay traces, that of its own send span,
a child of the context the row was written in; otherwise the row's own, as stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)
from cloudevents.core.bindings.kafka import to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from opentelemetry.trace import Span, SpanKind
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.kafka_headers import TRACEPARENT
from schemas.roster_alerts import ALERTS_SOURCE, ALERTS_TOPIC
from schemas.roster_changes import CHANGES_SOURCE, CHANGES_TOPIC
from service import failpoints, tracing
from service.db.uow import UnitOfWork
from service.outbox import store
from service.outbox.metrics import (
    BACKLOG,
    BACKLOG_AGE,
    PARKED,
    PARKED_TOTAL,
    PRUNED,
    RELAY_LATENCY,
    RELAYED,
)
from service.retry import retrying

log = logging.getLogger(__name__)

_FORMAT = JSONFormat()
SOURCES = {CHANGES_TOPIC: CHANGES_SOURCE, ALERTS_TOPIC: ALERTS_SOURCE}


class Unencodable(Exception):
    """The row cannot be made into a message (its stored data is not what the relay expects)."""


# The broker (or the client, checking first) will never accept this record as it is.
REFUSALS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    UnsupportedForMessageFormatError,
    Unencodable,
)


def kafka_message(
    row: store.Pending, traceparent: str | None = None
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The row as a CloudEvent in Kafka binary mode: (key, value, headers); with a trace context,
    in `ce_traceparent` (the CloudEvents extension) and `traceparent` (W3C, as the door writes)."""
    attributes = {
        "id": f"{row.key}.{row.sequence}",  # unique per source; the same on a re-publish
        "source": SOURCES.get(row.topic, f"/roster-sync/{row.topic}"),
        "type": row.type,
        "subject": row.key,
        "time": row.written_at,
        "datacontenttype": "application/json",
        "sequence": str(row.sequence),
        "districtid": row.district_id,
    }
    if traceparent:
        attributes["traceparent"] = traceparent
    message = to_binary(
        CloudEvent(attributes=attributes, data=row.data), _FORMAT, key_mapper=lambda _: row.key
    )
    headers = list(message.headers.items())
    if traceparent:
        headers.append((TRACEPARENT, traceparent.encode()))
    return row.key.encode(), message.value, headers


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
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        """`producer_options` lets the relay start a fresh producer after the broker refused a
        record (see `_publish`); the caller stops whichever `self.producer` is current."""
        self.engine = engine
        self.producer = producer
        self.producer_options = producer_options
        self._renewing = False  # the producer was stopped to be replaced
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
        """One round; returns how many rows it settled (published or parked)."""
        async with UnitOfWork(self.engine) as uow:
            rows = await store.claim(uow.connection, self.batch)
            if not rows:
                return 0
            sent, parked = await self._publish(rows)
            failpoints.hit("relay.after_publish")
            await store.mark_sent(uow.connection, [r.id for r in sent])
            if parked:
                await store.park(uow.connection, [(r.id, error) for r, error in parked])
            await uow.commit()
        now = datetime.now(UTC)
        for row in sent:
            RELAYED.labels(row.topic).inc()
            RELAY_LATENCY.observe(max(0.0, (now - row.written_at).total_seconds()))
        for row, error in parked:
            PARKED_TOTAL.labels(row.topic, error.split(":", 1)[0]).inc()
            log.error(
                "outbox row parked: the broker refuses it",
                extra={"outbox_id": row.id, "topic": row.topic, "key": row.key, "error": error},
            )
        if parked:
            PARKED.inc(len(parked))  # exact again at the next housekeeping
        self.published += len(sent)
        return len(rows)

    async def _publish(
        self, rows: Sequence[store.Pending]
    ) -> tuple[list[store.Pending], list[tuple[store.Pending, str]]]:
        """Publishes `rows`; returns those acknowledged and those refused for good (with the
        error). Raises on anything else, and if not every row is settled within the bound."""
        # Sent one after another (each `send` only queues), so a partition receives each key's
        # rows in id order; then every acknowledgement is awaited, within a bound.
        await self._ensure_producer()
        sends = [await self._send(row) for row in rows]
        await _settle(sends, self.publish_timeout)
        suspects = [row for row, f in zip(rows, sends, strict=True) if _suspect(f)]
        if not suspects:
            return list(rows), []
        # The broker refuses a whole record batch for one record: each suspect row alone, in id
        # order, tells which is at fault. An idempotent producer's sequence numbers for the
        # refused batch's partition are spent (later batches there fail out of sequence, and are
        # suspects too): a fresh producer sends them, and another after each refusal.
        await self._renew_producer()
        failed = {row.id for row in suspects}
        sent = [row for row in rows if row.id not in failed]
        parked: list[tuple[store.Pending, str]] = []
        for row in suspects:
            future = await self._send(row)
            await _settle([future], self.publish_timeout)
            if _refused(future):
                exc = future.exception()
                parked.append((row, f"{type(exc).__name__}: {exc}"[:1000]))
                await self._renew_producer()
            else:
                sent.append(row)
        return sent, parked

    async def _send(self, row: store.Pending) -> asyncio.Future[Any]:
        """The send of `row`, or a future failed with why it cannot be sent. When tracing, a
        send span continues the row's trace and ends with the send."""
        if not tracing.active():
            return await self._send_as(row, row.traceparent)
        span = tracing.start(
            f"send {row.topic}",
            kind=SpanKind.PRODUCER,
            context=tracing.remote(row.traceparent),
            attributes=lambda: {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": row.topic,
                "cloudevents.event_type": row.type,
                "roster.outbox.id": row.id,
            },
        )
        try:
            sending = await self._send_as(row, tracing.traceparent(span))
        except BaseException:
            span.end()
            raise
        sending.add_done_callback(functools.partial(_end_send, span))
        return sending

    async def _send_as(self, row: store.Pending, traceparent: str | None) -> asyncio.Future[Any]:
        try:
            try:
                key, value, headers = kafka_message(row, traceparent)
            except (ValueError, TypeError) as exc:
                raise Unencodable(str(exc)[:500]) from exc
            sending: asyncio.Future[Any] = await self.producer.send(
                row.topic, value, key=key, headers=headers
            )
            return sending
        except REFUSALS as exc:  # the client's own checks (its request size limit, say)
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def _renew_producer(self) -> None:
        """Replaces the producer by a fresh one with the same settings (a new producer id). If
        the fresh one cannot start, the round fails and the next round starts one."""
        if not self.producer_options:
            return
        self._renewing = True
        await self.producer.stop()
        await self._ensure_producer()

    async def _ensure_producer(self) -> None:
        if not self._renewing:
            return
        assert self.producer_options is not None
        fresh = AIOKafkaProducer(**self.producer_options)
        try:
            await fresh.start()
        except BaseException:
            await fresh.stop()
            raise
        self.producer, self._renewing = fresh, False

    async def run(self, stop: asyncio.Event) -> None:
        next_housekeeping = 0.0

        async def one_round() -> int | None:
            nonlocal next_housekeeping
            if stop.is_set():
                return None  # stopped while a failed round waited
            await self._ensure_listener()
            self._wake.clear()  # a NOTIFY from here on triggers another round
            published = await self.relay_once()
            if time.monotonic() >= next_housekeeping:
                await self.housekeeping()
                next_housekeeping = time.monotonic() + self.housekeeping_seconds
            return published

        async def failed(exc: Exception, wait: float) -> None:
            log.warning(
                "relay round failed; retrying",
                extra={
                    "error": type(exc).__name__,
                    "detail": str(exc)[:200],
                    "retry_in_s": wait,
                },
            )
            await self._drop_listener()

        while not stop.is_set():
            # The backoff starts again from its first wait after every round that succeeded.
            published = await retrying(one_round, first=0.1, most=10.0, on_retry=failed, stop=stop)
            if published is None:
                break
            if published < self.batch:
                await _wait_any(stop, self._wake, self.poll_seconds)
        await self._drop_listener()
        log.info("relay stopped", extra={"published": self.published})

    async def housekeeping(self, *, max_rounds: int = 20) -> None:
        """Prunes rows sent longer ago than the retention period, oldest first, in bounded
        transactions (up to `max_rounds` of 10,000 rows, enough to follow the outbox at tens of
        thousands of rows a second), and samples the backlog: its size, its oldest row's age, and
        the parked rows."""
        for _ in range(max_rounds):
            async with UnitOfWork(self.engine) as uow:
                pruned = await store.prune(uow.connection, self.retention_seconds)
                await uow.commit()
            PRUNED.inc(pruned)
            if pruned < 10_000:
                break
        async with self.engine.connect() as conn:
            backlog = await store.backlog(conn)
        BACKLOG.set(backlog.waiting)
        BACKLOG_AGE.set(backlog.oldest_age_seconds)
        PARKED.set(backlog.parked)

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


def _end_send(span: Span, future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        tracing.fail(span, "cancelled")
    elif future.exception() is not None:
        tracing.fail(span, type(future.exception()).__name__)
    span.end()


async def _settle(futures: Sequence[asyncio.Future[Any]], timeout: float) -> None:
    """Waits until every future is done; `TimeoutError` if one is not within `timeout`."""
    pending = [f for f in futures if not f.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=timeout)
        if late:
            raise TimeoutError(f"{len(late)} sends not acknowledged in {timeout} s")


def _refused(future: asyncio.Future[Any]) -> bool:
    """Whether a settled send was refused for good; raises what failed it otherwise (a transient
    error: the whole round is retried)."""
    if future.cancelled():
        raise asyncio.CancelledError("a send was cancelled")
    exc = future.exception()
    if exc is None:
        return False
    if isinstance(exc, REFUSALS):
        return True
    raise exc


def _suspect(future: asyncio.Future[Any]) -> bool:
    """Whether a send of a round must be tried again alone: refused, or out of sequence behind a
    refused batch."""
    if not future.cancelled() and isinstance(future.exception(), OutOfOrderSequenceNumber):
        return True
    return _refused(future)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
