"""The Events API poller: for each district whose lease it holds (service/pull/leases.py), pages
`GET /v3.0/events?starting_after=<cursor>` and publishes every page through the webhook door's
ingest path (the same dedupe and headers, `source=poller`).

Rules (contract v2, "Pull doors"; clever.md, "Pulling from Clever"):

- Cursor: stored only after ingest returned for the page, i.e. Kafka acknowledged every event of
  it (or it was there before: a duplicate), and after its invalid events are in the dead-letter
  topic. A crash re-reads a page, never skips one; the dedupe absorbs the copies. The write is
  fenced on the lease: a poller that lost the district moves nothing and stops.
- Invalid events: an event of a page that fails validation (not a Clever event, U+0000 or
  deeper than 64 levels, over 5 MiB) cannot block the district (Clever would serve the same page
  for ever) and must not vanish: it is published to `clever.events.dlq.v1` (key: the district)
  as Clever sent it, with the event's own headers (event id and type when it has them, source
  `poller`) and `dlq-error` naming the fields at fault (never values), `dlq-origin` the page;
  counted as `roster_poller_errors_total{kind="invalid_event"}` and logged with its id. The rest
  of the page is ingested, and the cursor moves past both once Kafka acknowledged both. (Such an
  event has no event-log row: `roster redrive` leaves it in the topic, where an operator reads
  it; it cannot be applied as it is.)
- Drained (the feed read to its end): the district waits `ROSTER_POLL_INTERVAL_SECONDS`.
- No cursor (first contact), a cursor whose event is older than Clever's 30-day window, or a
  cursor Clever refuses (CursorRefused): the district is backfilled first (service/pull/
  backfill.py), which ends with the cursor at the event id read before it began; so is a
  backfill requested by the API or the CLI that nobody runs (pending, or its runner's heartbeat
  stale). A cursor without a known `created` is checked by Clever's refusal alone.
- A token Clever rejects even after it was re-read: the district is `token_invalid` (with
  `last_error`) and waits for the next discovery before it tries again; the others go on.
- Clever unavailable (retries exhausted), Kafka or the database unavailable: the error is
  recorded on the district and counted, and the district tries again after the poll interval
  from its stored cursor.
- At most `ROSTER_POLL_MAX_CONCURRENT_DISTRICTS` districts poll (or backfill) at once; a drained
  district waiting for its interval takes no slot.
- Discovery: tokens are re-discovered every 60 s and at start (new districts get rows; districts
  the roster knows without a token are `no_token`). Without any token the poller idles (it says
  so once) and claims nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import kafka_headers as h
from schemas.clever import MAX_EVENT_BYTES
from service.clever import (
    CleverClient,
    CleverError,
    CleverUnavailable,
    CursorRefused,
    Page,
    TokenRejected,
    Tokens,
    UnexpectedAnswer,
)
from service.db.uow import DRIVER_ERRORS, UnitOfWork
from service.kafka.topics import CLEVER_EVENTS_DLQ
from service.pull import backfills, metrics, store
from service.pull.backfill import BackfillNotRunnable, BackfillTakenOver, LeaseLost
from service.pull.leases import Lease, LeaseKeeper
from service.pull.pages import InvalidEvent, SplitPage, split_page
from service.webhooks.delivery import Delivery, now_utc
from service.webhooks.ingest import Ingestor
from service.webhooks.results import Unavailable

log = logging.getLogger(__name__)

DISCOVERY_SECONDS = 60.0
# Clever keeps events 30 days; a cursor a little younger than that is trusted to be kept.
EVENTS_KEPT = timedelta(days=30)
# A running backfill whose runner beats is someone else's (a `roster backfill` of its own, or a
# poller that has just lost the lease): looked at again after this long.
BACKFILL_BUSY_WAIT = 5.0

# A failure of the database as the driver or SQLAlchemy reports it.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DBAPIError,
    TimeoutError,
    *DRIVER_ERRORS,
)


class Outcome(enum.Enum):
    DRAINED = "drained"  # the feed was read to its end: wait the poll interval
    AGAIN = "again"  # go on at once (a backfill ended; the cursor is set)
    FAILED = "failed"  # wait the poll interval, then try from the stored cursor
    TOKEN_INVALID = "token_invalid"  # noqa: S105 (a state) wait for the next discovery
    BUSY = "busy"  # someone else runs the district's backfill: look again shortly
    LOST = "lost"  # the lease is gone: the task ends


# Runs a backfill row to its end as this poller, fenced on its lease (service/pull/backfill.py's
# `run_backfill`): its final status; raises LeaseLost, BackfillNotRunnable, BackfillTakenOver.
RunBackfill = Callable[[str], Awaitable[str]]


def new_poller_id() -> str:
    """Unique per process: the lease owner, the heartbeat and the X-Roster-Process header."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


def new_traceparent() -> str:
    """A new W3C trace for a page (each page is a delivery of its own)."""
    trace_id = random.getrandbits(128) or 1
    span_id = random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-01"


class Poller:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        ingestor: Ingestor,
        client: CleverClient,
        tokens: Tokens,
        run_backfill: RunBackfill,
        poller_id: str,
        lease_seconds: float,
        poll_interval: float,
        max_concurrent: int,
        publish_timeout: float,
        discovery_seconds: float = DISCOVERY_SECONDS,
        dead_letter_topic: str = CLEVER_EVENTS_DLQ.name,
    ) -> None:
        self.id = poller_id
        self._engine = engine
        self._producer = producer
        self._ingestor = ingestor
        self._client = client
        self._tokens = tokens
        self._run_backfill = run_backfill
        self._poll_interval = poll_interval
        self._slots = asyncio.Semaphore(max_concurrent)
        self._publish_timeout = publish_timeout
        self._discovery_seconds = discovery_seconds
        self._dead_letter_topic = dead_letter_topic
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._busy: set[str] = set()  # districts polling or backfilling right now
        self._discovered = asyncio.Event()  # set (and replaced) by each discovery
        self._has_tokens = False
        self._said_idle = False
        self.leases = LeaseKeeper(
            engine,
            poller_id,
            lease_seconds,
            start=self._start,
            stop=self._stop_task,
            rank=lambda district_id: int(district_id in self._busy),
        )

    # --- the process --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Discovery, then lease rounds and district tasks until `stop`; then every lease is
        given up at once (the other pollers take the districts at their next round)."""
        await self.discover()
        discovery = asyncio.create_task(self._discover_every(stop), name="poller-discovery")
        try:
            await self.leases.run(stop, claiming=lambda: self._has_tokens)
        finally:
            discovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await discovery
            try:
                await self.leases.release_all()
            except Exception as exc:  # the leases then expire by themselves within the TTL
                log.warning("could not release the leases", extra={"error": type(exc).__name__})
            for task in list(self._tasks.values()):
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _discover_every(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._discovery_seconds):
                    await stop.wait()
            if not stop.is_set():
                await self.discover()

    async def discover(self) -> None:
        """Re-reads the district tokens and records them (see the module); a failure keeps the
        tokens known before and is logged."""
        try:
            found = await self._tokens.discover()
        except (CleverError, httpx.HTTPError) as exc:
            log.warning("token discovery failed", extra={"error": str(exc)})
            return
        try:
            async with UnitOfWork(self._engine) as uow:
                await store.discovered(uow.connection, {d: t.source for d, t in found.items()})
                await uow.commit()
        except DATABASE_ERRORS as exc:
            log.warning("could not record discovered districts", extra={"error": repr(exc)})
        self._has_tokens = bool(found)
        if not found and not self._said_idle:
            log.warning(
                "no Clever district tokens (ROSTER_CLEVER_DISTRICT_TOKENS, or the token list of "
                "ROSTER_CLEVER_CLIENT_ID/SECRET): the poller idles until some are found"
            )
        self._said_idle = not found
        woken, self._discovered = self._discovered, asyncio.Event()
        woken.set()

    # --- district tasks -----------------------------------------------------------------------

    def _start(self, lease: Lease) -> None:
        self._tasks[lease.district_id] = asyncio.create_task(
            self._district(lease), name=f"poll-{lease.district_id}"
        )

    async def _stop_task(self, district_id: str, graceful: bool) -> None:
        task = self._tasks.pop(district_id, None)
        if task is None:
            return
        if graceful:
            # Finishes the page in hand (its cursor write included) before the lease goes.
            # Bounded by a third of the TTL: the lease round waits for it, and the other leases'
            # renewals must not fall behind.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self.leases.period)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _district(self, lease: Lease) -> None:
        try:
            await self._district_loop(lease)
        finally:
            # Ended by itself (the lease lapsed locally, or a fenced write found it gone): the
            # next round starts a new task if the district is still this poller's.
            if self.leases.held.get(lease.district_id) is lease:
                del self.leases.held[lease.district_id]
            if self._tasks.get(lease.district_id) is asyncio.current_task():
                del self._tasks[lease.district_id]

    async def _district_loop(self, lease: Lease) -> None:
        district_id = lease.district_id
        while lease.valid():
            try:
                async with self._slots:
                    if not lease.valid():
                        return
                    self._busy.add(district_id)
                    try:
                        outcome = await self._cycle(lease)
                    finally:
                        self._busy.discard(district_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the district's polling for good
                log.exception("district poll failed", extra={"district_id": district_id})
                outcome = Outcome.FAILED
            if outcome is Outcome.LOST:
                lease.stopping.set()
                return
            if outcome in (Outcome.DRAINED, Outcome.FAILED):
                await lease.sleep(self._poll_interval)
            elif outcome is Outcome.BUSY:
                await lease.sleep(BACKFILL_BUSY_WAIT)
            elif outcome is Outcome.TOKEN_INVALID:
                await self._next_discovery(lease)

    async def _next_discovery(self, lease: Lease) -> None:
        discovered = asyncio.ensure_future(self._discovered.wait())
        stopping = asyncio.ensure_future(lease.stopping.wait())
        try:
            await asyncio.wait({discovered, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            discovered.cancel()
            stopping.cancel()

    async def _cycle(self, lease: Lease) -> Outcome:
        """One turn of a district: its pending backfill, else a backfill it needs, else a poll
        of its feed from the stored cursor to the end."""
        district_id = lease.district_id
        try:
            async with UnitOfWork(self._engine) as uow:
                row = await store.district(uow.connection, district_id)
                running = await backfills.running(uow.connection, district_id)
                pending = await backfills.pending(uow.connection, [district_id])
                synced = row is not None and row.cursor_event_id is not None
                if not synced:  # a backfill that found the feed empty leaves no cursor
                    synced = await backfills.last_finished(uow.connection, district_id) is not None
        except DATABASE_ERRORS as exc:
            self._error(district_id, "database_unavailable", exc)
            return Outcome.FAILED
        if row is None or row.lease_owner != self.id:
            return Outcome.LOST
        if running is not None:
            if not pending and running["runner"] != self.id:
                return Outcome.BUSY
            return await self._backfill(lease, running["id"], None)
        if not synced:
            return await self._backfill(lease, None, "first_contact")
        if row.cursor_created_at is not None and row.cursor_created_at < now_utc() - EVENTS_KEPT:
            metrics.ERRORS.labels(district_id, "cursor_refused").inc()
            log.info(
                "cursor older than Clever's 30-day window: backfilling",
                extra={"district_id": district_id, "cursor": row.cursor_event_id},
            )
            return await self._backfill(lease, None, "cursor_refused")
        return await self._poll(lease, row.cursor_event_id)

    async def _poll(self, lease: Lease, cursor: str | None) -> Outcome:
        district_id = lease.district_id
        try:
            pages = self._client.events(district_id, cursor)
            try:
                async for page in pages:
                    split = split_page(page)
                    if split.size:
                        await self._publish(district_id, page, split)
                    if split.last_id is not None and split.last_id != cursor:
                        if not await self._fenced(
                            store.page_stored,
                            lease,
                            split.last_id,
                            split.last_created,
                        ):
                            return Outcome.LOST
                        cursor = split.last_id
                        metrics.EVENTS_PULLED.labels(district_id).inc(split.size)
                        metrics.succeeded(district_id)
                    if not lease.valid():  # no further request once the lease may be gone
                        return Outcome.LOST
            finally:
                await _close(pages)
            if not await self._fenced(store.drained, lease):
                return Outcome.LOST
            metrics.drained(district_id, time.time())
            return Outcome.DRAINED
        except CursorRefused:
            metrics.ERRORS.labels(district_id, "cursor_refused").inc()
            log.info(
                "Clever refused the cursor: backfilling",
                extra={"district_id": district_id, "cursor": cursor},
            )
            return await self._backfill(lease, None, "cursor_refused")
        except TokenRejected:
            # Counted as token_invalid by the client's observer.
            await self._fenced(
                store.set_state,
                lease,
                "token_invalid",
                "Clever rejected the district's token (401), also after re-reading it",
            )
            log.warning("district token rejected", extra={"district_id": district_id})
            return Outcome.TOKEN_INVALID
        except CleverUnavailable as exc:  # each failed attempt was counted by the observer
            await self._failed(lease, f"Clever unavailable ({exc.kind})")
            return Outcome.FAILED
        except UnexpectedAnswer as exc:
            self._error(district_id, "unexpected_answer", exc)
            await self._failed(lease, str(exc))
            return Outcome.FAILED
        except Unavailable as exc:
            self._error(district_id, exc.error, exc)  # kafka_unavailable, database_unavailable, ...
            await self._failed(lease, f"{exc.dependency} could not acknowledge the page")
            return Outcome.FAILED
        except DATABASE_ERRORS as exc:
            self._error(district_id, "database_unavailable", exc)
            return Outcome.FAILED

    async def _publish(self, district_id: str, page: Page, split: SplitPage) -> None:
        """Ingests the page's valid events and dead-letters its invalid ones; returns once Kafka
        acknowledged all of them (Unavailable otherwise: the cursor stays)."""
        delivery = Delivery(
            source="poller",
            delivery_id=f"poll:{district_id}:{split.last_id}",
            traceparent=new_traceparent(),
            received_at=now_utc(),
        )
        if split.events:
            await self._ingestor.ingest(split.events, delivery)
        if split.invalid:
            await self._dead_letter(district_id, page, delivery, split.invalid)

    async def _dead_letter(
        self, district_id: str, page: Page, delivery: Delivery, invalid: Sequence[InvalidEvent]
    ) -> None:
        at = now_utc().isoformat().encode()
        origin = f"poller/{district_id}/{page.uri}".encode()
        try:
            async with asyncio.timeout(self._publish_timeout):
                futures = []
                for event in invalid:
                    headers = list(delivery.headers)
                    if event.event_id is not None:
                        headers.append((h.EVENT_ID, event.event_id.encode()))
                    if event.event_type is not None:
                        headers.append((h.EVENT_TYPE, event.event_type.encode()))
                    headers += [
                        (h.DLQ_ERROR, event.error.encode()),
                        (h.DLQ_ORIGIN, origin),
                        (h.DLQ_AT, at),
                    ]
                    futures.append(
                        await self._producer.send(
                            self._dead_letter_topic,
                            key=district_id.encode(),
                            value=_dead_letter_value(event),
                            headers=headers,
                        )
                    )
                await asyncio.gather(*futures)
        except Exception as exc:
            detail = f"dead letters not acknowledged: {type(exc).__name__}"
            raise Unavailable("kafka", detail) from None
        metrics.ERRORS.labels(district_id, "invalid_event").inc(len(invalid))
        log.warning(
            "invalid events in the feed sent to the dead-letter topic",
            extra={
                "district_id": district_id,
                "event_ids": [e.event_id for e in invalid],
                "errors": [e.error[:300] for e in invalid],
            },
        )

    async def _backfill(self, lease: Lease, backfill_id: str | None, reason: str | None) -> Outcome:
        """Runs the district's backfill (a new one for `reason`, or `backfill_id`); the run ends
        with the cursor set, so the next cycle polls from there."""
        district_id = lease.district_id
        try:
            async with UnitOfWork(self._engine) as uow:
                if not await store.set_state(uow.connection, self.id, district_id, "backfilling"):
                    return Outcome.LOST
                if backfill_id is None:
                    assert reason is not None
                    row = await backfills.insert(uow.connection, district_id, reason=reason)
                    if row is None:  # one was requested meanwhile: that one runs
                        row = await backfills.running(uow.connection, district_id)
                    if row is None:
                        return Outcome.AGAIN
                    backfill_id = row["id"]
                await uow.commit()
        except DATABASE_ERRORS as exc:
            self._error(district_id, "database_unavailable", exc)
            return Outcome.FAILED
        log.info(
            "backfilling district",
            extra={"district_id": district_id, "backfill_id": backfill_id, "reason": reason},
        )
        try:
            status = await self._run_backfill(backfill_id)
        except asyncio.CancelledError:
            raise
        except LeaseLost:
            return Outcome.LOST
        except (BackfillNotRunnable, BackfillTakenOver):
            return Outcome.BUSY  # another runner runs it: polled once it has ended
        except Exception as exc:
            self._error(district_id, "backfill_failed", exc)
            await self._failed(lease, f"backfill {backfill_id} failed: {type(exc).__name__}")
            return Outcome.FAILED
        if not lease.valid():
            return Outcome.LOST
        if status == "failed":  # the run recorded its error on the district
            metrics.ERRORS.labels(district_id, "backfill_failed").inc()
            return Outcome.FAILED
        if status == "guarded":  # synced, nothing archived: polling goes on from its cursor
            log.warning(
                "backfill guarded: nothing archived",
                extra={"district_id": district_id, "backfill_id": backfill_id},
            )
        return Outcome.AGAIN

    # --- helpers ------------------------------------------------------------------------------

    async def _fenced(
        self, write: Callable[..., Awaitable[object]], lease: Lease, *args: object
    ) -> bool:
        """A district write fenced on the lease, in its own unit of work: False if the lease is
        gone (nothing was written)."""
        async with UnitOfWork(self._engine) as uow:
            done = await write(uow.connection, self.id, lease.district_id, *args)
            await uow.commit()
        return done is not None and done is not False

    async def _failed(self, lease: Lease, error: str) -> None:
        try:
            await self._fenced(store.failed, lease, error)
        except DATABASE_ERRORS as exc:
            log.warning(
                "could not record a district's error",
                extra={"district_id": lease.district_id, "error": repr(exc)},
            )

    def _error(self, district_id: str, kind: str, exc: BaseException) -> None:
        metrics.ERRORS.labels(district_id, kind).inc()
        log.warning(
            "district poll failed",
            extra={"district_id": district_id, "kind": kind, "error": str(exc)[:300]},
        )


async def _close(pages: AsyncIterator[Page]) -> None:
    """Ends a feed left early (its generator's open request is closed now, not by the GC)."""
    aclose = getattr(pages, "aclose", None)
    if aclose is not None:
        await aclose()


def _dead_letter_value(event: InvalidEvent) -> bytes:
    """The event as Clever sent it; a stand-in naming it when that cannot be carried (too large
    for a record, or not writable as JSON)."""
    if event.raw is not None and len(event.raw) <= MAX_EVENT_BYTES:
        return event.raw
    return orjson.dumps(
        {
            "event_id": event.event_id,
            "type": event.event_type,
            "note": "the event could not be carried; read it from Clever",
            "bytes": None if event.raw is None else len(event.raw),
        }
    )
