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

Every wait is bounded, so a dependency that stops answering costs a 503, never a hung request:
- each request has a deadline (`ROSTER_PUBLISH_TIMEOUT_SECONDS` from its arrival) for its wait in
  the queue and for Kafka; the queue holds at most `ROSTER_WEBHOOK_MAX_QUEUED_EVENTS` events, a
  request beyond that is answered 503 at once;
- each database step (connect and claim, commit, release of unacknowledged claims, rollback) has
  its own bound, `ROSTER_WEBHOOK_DATABASE_TIMEOUT_SECONDS`, so a database that stops answering (at
  COMMIT, say) ends the batch with a 503 and a connection that is thrown away.
A request whose deadline passes is answered for what it was waiting on then: Kafka, or the
database step a batch ahead of it is stuck in. One in a database step waits for that step's own
bound instead, so Kafka's slowness is never reported as the database's; and a batch waits for Kafka
until the latest deadline of its requests, so one request about to expire does not fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from schemas import kafka_headers as h
from schemas.clever import EVENT_TYPES
from service.db.driver_pool import DriverPool
from service.db.uow import DRIVER_ERRORS, DriverUnitOfWork
from service.events import store as events_log
from service.kafka.gateway import KafkaGateway
from service.kafka.topics import CLEVER_EVENTS
from service.metrics import EVENTS, PUBLISH_LATENCY
from service.webhooks.parse import ParsedEvent

log = logging.getLogger(__name__)

# How a claim fails when the database is down or slow.
_CLAIM_FAILURES: tuple[type[BaseException], ...] = (TimeoutError, *DRIVER_ERRORS)
# How a commit or a release fails: the same (their own bound, or the driver).
_STEP_FAILURES = _CLAIM_FAILURES


class Unavailable(Exception):
    """A dependency could not do its part in time; nothing unacknowledged was recorded."""

    def __init__(self, dependency: str, detail: str, *, error: str | None = None) -> None:
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency
        self.detail = detail
        self.error = error or f"{dependency}_unavailable"
        self.message = f"{dependency} could not acknowledge in time; retry"


class Overloaded(Unavailable):
    """Too many events already wait for a batch: refused at once rather than queued."""

    def __init__(self, detail: str) -> None:
        super().__init__("ingest", detail, error="overloaded")
        self.message = "too many events are waiting to be made durable; retry"


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    accepted_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a body came from: the door, the delivery id and the trace it belongs to."""

    source: str
    delivery_id: str
    traceparent: str
    received_at: datetime
    # Formatted once per body, at construction: every delivery needs both, and a cached_property
    # takes a lock on its first access in Python 3.11 (about 1 us more per request).
    received_iso: str = field(init=False)
    headers: list[tuple[str, bytes]] = field(init=False)  # the Kafka headers all its events share

    def __post_init__(self) -> None:
        received_iso = self.received_at.isoformat()
        object.__setattr__(self, "received_iso", received_iso)
        object.__setattr__(
            self,
            "headers",
            [
                (h.SOURCE, self.source.encode()),
                (h.RECEIVED_AT, received_iso.encode()),
                (h.TRACEPARENT, self.traceparent.encode()),
                ("webhook-id", self.delivery_id.encode()),
            ],
        )


SendFuture = asyncio.Future[Any]
# From this many records for one partition, the door builds a record batch of its own; fewer go
# through send(), which appends them to the partition's open batch in the producer, shared with
# concurrent ingest batches. A batch of its own costs the broker a record batch however few its
# records, and aiokafka queues it only once the partition's previous batch is on its way, so
# concurrent single-event requests each waited a round trip of their own. Measured on single
# events (64 connections): API CPU 292-338 us/event with send() vs 376-448 with a batch per
# partition each, broker CPU about half; pages of 100 (about 8 records per partition) stay
# cheaper with batches of their own (58-62 vs 64-67 us/event).
_OWN_BATCH_FROM = 4
_PARTITIONER = DefaultPartitioner()
# Districts whose route is cached. Past it the cache starts again: ids seen once (or made up by a
# sender holding a secret) must not grow it for ever; real deployments serve far fewer districts.
_MAX_ROUTES = 10_000
_ACCEPTED = EVENTS.labels("accepted")
_DUPLICATES = EVENTS.labels("duplicate")


# What a batch waits on: the database (claim, then commit or release) or Kafka.
_CLAIM, _KAFKA, _COMMIT = "claim", "kafka", "commit"


@dataclass(eq=False)
class _Batch:
    jobs: list[_Job]
    stage: str = _CLAIM


@dataclass(eq=False)
class _Job:
    """One request's events, waiting for a batch to make them durable."""

    events: dict[str, ParsedEvent]  # unique by event id
    count: int  # events in the body, duplicates within it included
    delivery: Delivery
    deadline: float
    result: asyncio.Future[IngestResult]
    batch: _Batch | None = None  # None while queued
    queued: bool = True  # counted in the queue's size
    expired: bool = False  # its deadline passed during a database step of its batch


def _dependency(stage: str) -> str:
    return "kafka" if stage == _KAFKA else "database"


class Ingestor:
    """Group commit: concurrent requests are ingested together, one transaction per batch.

    Each batch claims the ids of all its requests in one statement, publishes what it claimed,
    waits for the acknowledgements and commits once; then every request gets its own answer. A
    request is accepted only if every event it brought is now durable (acknowledged in this batch,
    or recorded before). Up to `max_concurrent_batches` batches are in flight at once, so the next
    batch forms while the previous one waits for Kafka.
    """

    def __init__(
        self,
        pool: DriverPool,
        kafka: KafkaGateway,
        *,
        timeout: float,
        database_timeout: float = 5.0,
        max_queued_events: int = 50_000,
        topic: str = CLEVER_EVENTS.name,
        max_batch_events: int = 5_000,
        max_concurrent_batches: int = 4,
    ) -> None:
        self._pool = pool
        self._kafka = kafka
        self._timeout = timeout
        self._db_timeout = database_timeout
        self._max_queued_events = max_queued_events
        self._queued_events = 0
        self._running: dict[_Batch, None] = {}  # in start order
        self._topic = topic
        self._max_batch_events = max_batch_events
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._queue: deque[_Job] = deque()
        self._forming = False
        self._inflight: dict[str, SendFuture] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._routes: dict[str, tuple[int, bytes]] = {}  # district -> (partition, key)
        self._sorted_partitions: list[int] = []  # the partitions the routes were computed for
        self._partition_locks: dict[int, asyncio.Lock] = {}

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def queued_events(self) -> int:
        return self._queued_events

    async def ingest(self, events: Sequence[ParsedEvent], delivery: Delivery) -> IngestResult:
        unique: dict[str, ParsedEvent] = {}
        for parsed in events:
            unique.setdefault(parsed.event_id, parsed)
        if self._kafka.producer is None:
            raise Unavailable("kafka", "not connected")
        # An empty queue takes any body, so one larger than the bound is not refused for ever.
        if self._queued_events and self._queued_events + len(unique) > self._max_queued_events:
            raise Overloaded(f"{self._queued_events} events queued")
        loop = asyncio.get_running_loop()
        job = _Job(unique, len(events), delivery, loop.time() + self._timeout, loop.create_future())
        self._queue.append(job)
        self._queued_events += len(unique)
        # A timer, not a timeout around the await: the batch may still need the job after its
        # deadline (see `_expire`), and a timer costs the hot path the least.
        timer = loop.call_at(job.deadline, self._expire, job)
        if not self._forming:
            self._forming = True
            self._spawn(self._form_batches())
        try:
            return await job.result
        finally:
            timer.cancel()

    def _expire(self, job: _Job) -> None:
        """The job's deadline: answered now if it waits in the queue (blamed on what the oldest
        running batch waits on) or for Kafka. A job in a database step is answered by the step's
        outcome, which has its own bound: after a claim the batch gives it no Kafka time, after a
        commit it is durable."""
        if job.result.done():
            return
        batch = job.batch
        if batch is None:
            self._unqueue(job)
            oldest = next(iter(self._running), None)
            blamed = _dependency(oldest.stage) if oldest is not None else "kafka"
            job.result.set_exception(Unavailable(blamed, "queued past the request's deadline"))
        elif batch.stage == _KAFKA:
            job.result.set_exception(Unavailable("kafka", "not acknowledged in time"))
        else:
            job.expired = True

    def _unqueue(self, job: _Job) -> None:
        if job.queued:
            job.queued = False
            self._queued_events -= len(job.events)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _form_batches(self) -> None:
        """Takes whatever requests have queued whenever a batch slot is free."""
        try:
            while self._queue:
                await self._slots.acquire()
                batch = _Batch([])
                size = 0
                while self._queue and (
                    not batch.jobs or size + len(self._queue[0].events) <= self._max_batch_events
                ):
                    job = self._queue.popleft()
                    self._unqueue(job)
                    if job.result.done():
                        continue  # expired in the queue, or its caller left
                    job.batch = batch
                    batch.jobs.append(job)
                    size += len(job.events)
                if not batch.jobs:
                    self._slots.release()
                    continue
                self._spawn(self._run_batch(batch))
        finally:
            self._forming = False

    async def _run_batch(self, batch: _Batch) -> None:
        jobs = batch.jobs
        self._running[batch] = None
        try:
            outcomes = await self._ingest_batch(batch)
        except Unavailable as exc:
            outcomes = [exc] * len(jobs)
        except Exception as exc:  # a bug must not leave requests waiting forever
            log.exception("ingest batch failed")
            outcomes = [Unavailable("kafka", type(exc).__name__)] * len(jobs)
        finally:
            del self._running[batch]
            self._slots.release()
        for job, outcome in zip(jobs, outcomes, strict=True):
            if job.result.done():
                continue
            if isinstance(outcome, Exception):
                job.result.set_exception(outcome)
            else:
                job.result.set_result(outcome)

    async def _ingest_batch(self, batch: _Batch) -> list[IngestResult | Unavailable]:
        producer = self._kafka.producer
        if producer is None:
            raise Unavailable("kafka", "not connected")
        jobs = batch.jobs
        wanted: dict[str, tuple[ParsedEvent, Delivery]] = {}
        for job in jobs:
            for eid, parsed in job.events.items():
                wanted.setdefault(eid, (parsed, job.delivery))

        async with AsyncExitStack() as stack:
            try:
                # Connecting counts against the bound too: a hanging database is bounded.
                async with asyncio.timeout(self._db_timeout):
                    uow = await stack.enter_async_context(
                        DriverUnitOfWork(self._pool, timeout=self._db_timeout)
                    )
                    claimed = await events_log.claim(uow.driver, wanted)
            except _CLAIM_FAILURES as exc:
                blamed = "database"
                if isinstance(exc, TimeoutError) and self._sending(wanted):
                    # The claim waited on the row locks of a batch whose sends of the same ids
                    # are still waiting for Kafka.
                    blamed = "kafka"
                raise Unavailable(blamed, type(exc).__name__) from None

            # Kafka waits until the latest deadline of the batch's requests; one whose deadline
            # passed during the claim gets no Kafka time (`_expire`).
            batch.stage = _KAFKA
            deadline = asyncio.get_running_loop().time()
            for job in jobs:
                if job.result.done():
                    continue
                if job.expired:
                    job.result.set_exception(Unavailable("kafka", "not acknowledged in time"))
                elif job.deadline > deadline:
                    deadline = job.deadline
            # Published in arrival order (a page's feed order), whatever the claim's lock order.
            futures = await self._publish(
                producer, {eid: wanted[eid] for eid in wanted if eid in claimed}, deadline
            )
            # Records of one record batch share its future: check each future once, not per event.
            landed = {fut for fut in set(futures.values()) if _succeeded(fut)}
            acked = {eid for eid, fut in futures.items() if fut in landed}
            unacked = claimed - acked
            batch.stage = _COMMIT
            if unacked:
                await self._keep_acknowledged(uow, unacked, bool(acked))
                for eid in unacked:
                    self._watch_late_delivery(eid, *wanted[eid])
            else:
                try:
                    await uow.commit()  # bounded by the unit of work
                except _STEP_FAILURES as exc:
                    # Published, not recorded: the retry publishes again (a second copy the
                    # consumer's dedupe absorbs), but nothing is lost.
                    raise Unavailable("database", type(exc).__name__) from None
        for eid in acked:
            self._inflight.pop(eid, None)

        outcomes: list[IngestResult | Unavailable] = []
        credited: set[str] = set()
        accepted = duplicates = 0
        for job in jobs:
            if unacked and any(eid in unacked for eid in job.events):
                missing = sum(eid in unacked for eid in job.events)
                outcomes.append(Unavailable("kafka", f"{missing} event(s) not acknowledged"))
                continue
            # The first request of the batch that brought a newly claimed id is credited with it.
            mine = tuple(sorted(eid for eid in job.events if eid in acked and eid not in credited))
            credited.update(mine)
            accepted += len(mine)
            duplicates += job.count - len(mine)
            outcomes.append(IngestResult(len(mine), job.count - len(mine), mine))
        # Counted once per batch (a labelled increment costs a lock and a lookup).
        _ACCEPTED.inc(accepted)
        _DUPLICATES.inc(duplicates)
        return outcomes

    async def _publish(
        self,
        producer: AIOKafkaProducer,
        events: dict[str, tuple[ParsedEvent, Delivery]],
        deadline: float,
    ) -> dict[str, SendFuture]:
        """Sends what is not already on its way, in arrival order, grouped by partition (see
        `_OWN_BATCH_FROM`); waits for acknowledgements until `deadline`."""
        futures: dict[str, SendFuture] = {}
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                routes = self._routes_of(await producer.partitions_for(self._topic))
                by_partition: dict[int, list[tuple[str, bytes, ParsedEvent, Delivery]]] = {}
                inflight = self._inflight
                for eid, (parsed, delivery) in events.items():
                    earlier = inflight.get(eid)
                    if earlier is not None and not (earlier.done() and not _succeeded(earlier)):
                        futures[eid] = earlier  # an earlier attempt's send, still on its way
                        continue
                    partition, key = routes.get(parsed.district_id) or self._route(
                        parsed.district_id
                    )
                    items = by_partition.get(partition)
                    if items is None:
                        items = by_partition[partition] = []
                    items.append((eid, key, parsed, delivery))
                for partition, items in by_partition.items():
                    await self._send_partition(producer, partition, items, futures)
        except Exception as exc:
            # No metadata or buffer space in time: what was sent so far is still waited for.
            log.warning("publish stopped early", extra={"error": type(exc).__name__})
        sent = set(futures.values())  # a record batch's events share one future
        pending = [f for f in sent if not f.done()]
        remaining = deadline - asyncio.get_running_loop().time()
        if pending and remaining > 0:
            await asyncio.wait(pending, timeout=remaining)
        if sent and all(_succeeded(f) for f in sent):
            PUBLISH_LATENCY.observe(time.perf_counter() - started)
        return futures

    async def _send_partition(
        self,
        producer: AIOKafkaProducer,
        partition: int,
        items: list[tuple[str, bytes, ParsedEvent, Delivery]],
        futures: dict[str, SendFuture],
    ) -> None:
        # aiokafka queues one record batch per partition and, with several callers waiting for
        # that slot, its wait loop deducts the total elapsed time on every pass and gives up
        # early (aiokafka 0.14 add_batch). One sender per partition at a time avoids that, and
        # keeps concurrent ingest batches in submission order on the partition.
        async with self._partition_locks.setdefault(partition, asyncio.Lock()):
            if len(items) < _OWN_BATCH_FROM:
                for eid, key, parsed, delivery in items:
                    future = await producer.send(
                        self._topic,
                        value=parsed.raw,
                        key=key,
                        partition=partition,
                        headers=_headers(parsed, delivery),
                    )
                    futures[eid] = self._inflight[eid] = future
                return
            batch = producer.create_batch()
            members: list[str] = []

            async def submit() -> None:
                nonlocal batch, members
                future = await producer.send_batch(batch, self._topic, partition=partition)
                for member in members:
                    futures[member] = self._inflight[member] = future
                batch, members = producer.create_batch(), []

            for eid, key, parsed, delivery in items:
                headers = _headers(parsed, delivery)
                if batch.append(key=key, value=parsed.raw, timestamp=None, headers=headers) is None:
                    await submit()  # full: send it, start the next one
                    if (
                        batch.append(key=key, value=parsed.raw, timestamp=None, headers=headers)
                        is None
                    ):
                        raise ValueError(f"event {eid} does not fit in a record batch")
                members.append(eid)
            if members:
                await submit()

    def _routes_of(self, partitions: set[int]) -> dict[str, tuple[int, bytes]]:
        """The cached routes, emptied when the topic's partition count has changed."""
        if len(partitions) != len(self._sorted_partitions):
            self._routes = {}
            self._sorted_partitions = sorted(partitions)
        return self._routes

    def _route(self, district_id: str) -> tuple[int, bytes]:
        """The district's Kafka key and the partition Kafka's default partitioner (murmur2)
        picks for it; cached, as a page repeats the same few districts."""
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        key = district_id.encode()
        partitions = self._sorted_partitions
        route = self._routes[district_id] = (_PARTITIONER(key, partitions, partitions), key)
        return route

    async def _keep_acknowledged(
        self, uow: DriverUnitOfWork, unacknowledged: set[str], any_acked: bool
    ) -> None:
        """Releases the unacknowledged claims; commits the acknowledged ones if there are any."""
        if not any_acked:
            return  # leaving the unit of work rolls every claim back (bounded)
        try:
            async with asyncio.timeout(self._db_timeout):
                await events_log.release(uow.driver, unacknowledged)
                await uow.commit()
        except _STEP_FAILURES:
            log.warning(
                "could not record acknowledged events of a failed batch; "
                "a retry publishes them again"
            )

    def _sending(self, events: dict[str, tuple[ParsedEvent, Delivery]]) -> bool:
        """Whether a send of one of `events` is still waiting for Kafka."""
        inflight = self._inflight
        return any((f := inflight.get(eid)) is not None and not f.done() for eid in events)

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
            self._spawn(self._record_late(eid, parsed, delivery, done))

        future.add_done_callback(landed)

    async def _record_late(
        self, eid: str, parsed: ParsedEvent, delivery: Delivery, future: SendFuture
    ) -> None:
        try:
            async with (
                asyncio.timeout(self._db_timeout),
                DriverUnitOfWork(self._pool, timeout=self._db_timeout) as uow,
            ):
                await events_log.claim(uow.driver, {eid: (parsed, delivery)})
                await uow.commit()
        except _CLAIM_FAILURES:
            # The registry keeps the landed send: a retry reuses it and records the row itself.
            log.warning("late delivery not recorded yet", extra={"event_id": eid})
            return
        if self._inflight.get(eid) is future:
            del self._inflight[eid]
        log.info(
            "late delivery recorded",
            extra={"event_id": eid, "district_id": parsed.district_id},
        )

    async def drain(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


def _headers(parsed: ParsedEvent, delivery: Delivery) -> list[tuple[str, bytes]]:
    return [
        (h.EVENT_ID, parsed.event_id.encode()),
        (h.EVENT_TYPE, _TYPE_BYTES[parsed.event_type]),
        *delivery.headers,
    ]


_TYPE_BYTES = {event_type: event_type.encode() for event_type in EVENT_TYPES}


def _succeeded(future: SendFuture) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def now_utc() -> datetime:
    return datetime.now(UTC)
