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
import functools
import logging
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

from aiokafka import AIOKafkaProducer

from service.db.driver_pool import DriverPool
from service.db.uow import DRIVER_ERRORS, DriverUnitOfWork
from service.events import store as events_log
from service.kafka.batching import PartitionSender, Record, SendFuture, succeeded
from service.kafka.gateway import KafkaGateway
from service.kafka.routing import PartitionRoutes
from service.kafka.topics import CLEVER_EVENTS
from service.metrics import EVENTS, PUBLISH_LATENCY
from service.webhooks.delivery import Delivery, record_headers
from service.webhooks.inflight import InflightSends
from service.webhooks.parse import ParsedEvent
from service.webhooks.queue import COMMIT, KAFKA, Batch, GroupCommit
from service.webhooks.results import IngestResult, Unavailable

log = logging.getLogger(__name__)

# How a claim fails when the database is down or slow.
_CLAIM_FAILURES: tuple[type[BaseException], ...] = (TimeoutError, *DRIVER_ERRORS)
# How a commit or a release fails: the same (their own bound, or the driver).
_STEP_FAILURES = _CLAIM_FAILURES
_ACCEPTED = EVENTS.labels("accepted")
_DUPLICATES = EVENTS.labels("duplicate")


class Ingestor:
    """Group commit: concurrent requests are ingested together, one transaction per batch.

    Each batch claims the ids of all its requests in one statement, publishes what it claimed,
    waits for the acknowledgements and commits once; then every request gets its own answer. A
    request is accepted only if every event it brought is now durable (acknowledged in this batch,
    or recorded before). Up to `max_concurrent_batches` batches are in flight at once, so the next
    batch forms while the previous one waits for Kafka (service/webhooks/queue.py).
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
        self._db_timeout = database_timeout
        self._queue = GroupCommit(
            self._outcomes,
            self._spawn,
            timeout=timeout,
            max_queued_events=max_queued_events,
            max_batch_events=max_batch_events,
            max_concurrent_batches=max_concurrent_batches,
        )
        self._sender = PartitionSender(topic)
        self._inflight = InflightSends()
        self._background: set[asyncio.Task[None]] = set()
        self._routes = PartitionRoutes()  # district -> (partition, key)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def queued_events(self) -> int:
        return self._queue.queued_events

    async def ingest(self, events: Sequence[ParsedEvent], delivery: Delivery) -> IngestResult:
        unique: dict[str, ParsedEvent] = {}
        for parsed in events:
            unique.setdefault(parsed.event_id, parsed)
        if self._kafka.producer is None:
            raise Unavailable("kafka", "not connected")
        return await self._queue.submit(unique, len(events), delivery)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _outcomes(self, batch: Batch) -> list[IngestResult | Unavailable]:
        """The batch's outcome per request; a failure is every request's."""
        try:
            return await self._ingest_batch(batch)
        except Unavailable as exc:
            return [exc] * len(batch.jobs)
        except Exception as exc:  # a bug must not leave requests waiting forever
            log.exception("ingest batch failed")
            return [Unavailable("kafka", type(exc).__name__)] * len(batch.jobs)

    async def _ingest_batch(self, batch: Batch) -> list[IngestResult | Unavailable]:
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
                if isinstance(exc, TimeoutError) and self._inflight.sending(wanted):
                    # The claim waited on the row locks of a batch whose sends of the same ids
                    # are still waiting for Kafka.
                    blamed = "kafka"
                raise Unavailable(blamed, type(exc).__name__) from None

            # Kafka waits until the latest deadline of the batch's requests; one whose deadline
            # passed during the claim gets no Kafka time (`GroupCommit._expire`).
            batch.stage = KAFKA
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
            landed = {fut for fut in set(futures.values()) if succeeded(fut)}
            acked = {eid for eid, fut in futures.items() if fut in landed}
            unacked = claimed - acked
            batch.stage = COMMIT
            if unacked:
                await self._keep_acknowledged(uow, unacked, bool(acked))
                for eid in unacked:
                    parsed, delivery = wanted[eid]
                    self._inflight.when_landed(
                        eid, functools.partial(self._late_landed, eid, parsed, delivery)
                    )
            else:
                try:
                    await uow.commit()  # bounded by the unit of work
                except _STEP_FAILURES as exc:
                    # Published, not recorded: the retry publishes again (a second copy the
                    # consumer's dedupe absorbs), but nothing is lost.
                    raise Unavailable("database", type(exc).__name__) from None
        for eid in acked:
            self._inflight.forget(eid)

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
        service/kafka/batching.py); waits for acknowledgements until `deadline`."""
        futures: dict[str, SendFuture] = {}
        inflight = self._inflight

        def sent(eid: str, future: SendFuture) -> None:
            futures[eid] = future
            inflight.add(eid, future)

        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                routing = self._routes
                routes = routing.of(await producer.partitions_for(self._sender.topic))
                by_partition: dict[int, list[Record]] = {}
                for eid, (parsed, delivery) in events.items():
                    earlier = inflight.joinable(eid)
                    if earlier is not None:
                        futures[eid] = earlier  # an earlier attempt's send, still on its way
                        continue
                    partition, key = routes.get(parsed.district_id) or routing.route(
                        parsed.district_id
                    )
                    records = by_partition.get(partition)
                    if records is None:
                        records = by_partition[partition] = []
                    records.append((eid, key, parsed.raw, record_headers(parsed, delivery)))
                for partition, records in by_partition.items():
                    await self._sender.send(producer, partition, records, sent)
        except Exception as exc:
            # No metadata or buffer space in time: what was sent so far is still waited for.
            log.warning("publish stopped early", extra={"error": type(exc).__name__})
        on_their_way = set(futures.values())  # a record batch's events share one future
        pending = [f for f in on_their_way if not f.done()]
        remaining = deadline - asyncio.get_running_loop().time()
        if pending and remaining > 0:
            await asyncio.wait(pending, timeout=remaining)
        if on_their_way and all(succeeded(f) for f in on_their_way):
            PUBLISH_LATENCY.observe(time.perf_counter() - started)
        return futures

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

    def _late_landed(
        self, eid: str, parsed: ParsedEvent, delivery: Delivery, future: SendFuture
    ) -> None:
        self._spawn(self._record_late(eid, parsed, delivery, future))

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
        self._inflight.forget_send(eid, future)
        log.info(
            "late delivery recorded",
            extra={"event_id": eid, "district_id": parsed.district_id},
        )

    async def drain(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
