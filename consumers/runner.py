"""The consumer loop shared by every consumer process.

Ack policy, explicitly: a batch from `getmany` (bounded size) is handed to the handler inside one
database transaction; offsets are committed to Kafka only after that transaction commits. A crash
between the two replays the batch, which the handlers make harmless by being idempotent. On
partition revocation the in-flight batch finishes and its offsets are committed before the
partitions move; SIGTERM drains the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.structs import OffsetAndMetadata
from opentelemetry.trace import Span, SpanKind
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.metrics import BATCH_SIZE, LAG
from schemas import kafka_headers as h
from service import tracing
from service.db.uow import UnitOfWork
from service.kafka.limits import MAX_RECORD_BYTES
from service.retry import retrying

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")  # what a handler's `handle` returns, handed back to its later steps


class Record(Protocol):
    """What the handlers read of an aiokafka ConsumerRecord (aiokafka ships no type hints)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class BatchHandler(Protocol[R]):
    async def handle(self, uow: UnitOfWork, records: Sequence[Record]) -> R:
        """Writes the batch's effects through `uow`; never commits. Returns what `committed`
        needs (several batches can be in flight at once)."""

    async def after_commit(self, engine: AsyncEngine, result: R) -> None:
        """Side effects that must follow the commit (dead letters): called with `handle`'s
        result before the batch's offsets are committed; a transient failure is retried."""

    def committed(self, result: R) -> None:
        """Called with `handle`'s result once the batch is done (metrics)."""


# SQLSTATE classes and codes worth retrying as they are: connection lost (08), resources (53),
# the server shutting down or not yet up (57), serialization failure and deadlock (40001, 40P01).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57")
_TRANSIENT_SQLSTATES = ("40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying as it is: the database (or the way to it) was unavailable.

    A database outage must never make an event look like poison and be dead-lettered. A Kafka
    error that Kafka calls retriable (broker unreachable, leader moving, replicas short), or a
    send that timed out, is retried too (a dead-letter send: the records are kept until it
    succeeds); one it does not (a record too large, no authorisation) is not."""
    if isinstance(exc, (OperationalError, InterfaceError, ConnectionError, OSError, TimeoutError)):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if state is None and orig is not None:
            state = getattr(getattr(orig, "__cause__", None), "sqlstate", None)
        if isinstance(state, str):
            return state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES
    return False


class Stopping(Exception):
    """A stop was asked for while a step (the transaction, or what follows its commit) kept
    failing."""


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner[Any]) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Wait for the batches in hand to reach the database, then hand over their offsets.
        try:
            await self._runner.drain()
            async with self._runner._commit_lock:
                await self._runner.commit_processed(set(revoked))
        finally:
            # Their lag is the new owner's to report: a last figure left here would stay on this
            # process's /metrics for ever (and hold a lag alert up after every scale-up).
            for tp in revoked:
                LAG.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)}
        )


class ConsumerRunner(Generic[R]):
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        engine: AsyncEngine,
        handler: BatchHandler[R],
        *,
        topics: Sequence[str],
        max_batch: int,
        max_retry_delay: float = 10.0,
        concurrency: int = 1,
    ) -> None:
        self.consumer = consumer
        self.engine = engine
        self.handler = handler
        self.topics = list(topics)
        self.max_batch = max_batch
        self.max_retry_delay = max_retry_delay
        self.concurrency = max(1, concurrency)
        self._inflight: dict[asyncio.Task[None], set[TopicPartition]] = {}
        self._commit_lock = asyncio.Lock()
        self._processed: dict[TopicPartition, int] = {}  # next offset to read, DB-committed
        self.batches = 0
        self.records = 0

    async def commit_processed(self, partitions: set[TopicPartition] | None = None) -> None:
        offsets = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self._processed.items()
            if partitions is None or tp in partitions
        }
        if not offsets:
            return
        await self.consumer.commit(offsets)
        for tp in offsets:
            self._processed.pop(tp, None)

    async def _apply(self, records: Sequence[Record], stop: asyncio.Event) -> None:
        """One transaction for the batch, then its after-commit step; transient failures (the
        database or Kafka unavailable) retry that step with backoff until it succeeds or a stop
        is asked for (the batch's offsets are then left uncommitted, so it is read again later:
        nothing is lost, and settled events are skipped then)."""

        async def transaction() -> R:
            # A span per attempt: what it writes to the outbox carries its context.
            with tracing.span("apply batch", attributes=lambda: _apply_attributes(records)):
                async with UnitOfWork(self.engine) as uow:
                    result = await self.handler.handle(uow, records)
                    await uow.commit()
            return result

        result = await self._retrying(transaction, stop, "database unavailable", len(records))
        await self._retrying(
            lambda: self.handler.after_commit(self.engine, result),
            stop,
            "after-commit step failed",
            len(records),
        )
        self.handler.committed(result)

    async def _retrying(
        self, step: Callable[[], Awaitable[T]], stop: asyncio.Event, what: str, records: int
    ) -> T:
        def failed(exc: Exception, wait: float) -> None:
            if stop.is_set():
                raise Stopping from exc
            log.warning(
                f"{what}; retrying",
                extra={"error": type(exc).__name__, "records": records, "retry_in_s": wait},
            )

        return await retrying(
            step,
            first=0.1,
            most=self.max_retry_delay,
            on_retry=failed,
            retry_if=is_transient,
            stop=stop,  # a stop ends the wait; the step is tried once more
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Fetches and applies batches until `stop`. Up to `concurrency` batches are in flight
        at once, each on partitions no other in-flight batch holds (so on districts no other
        holds: the key of every inbound topic). While one batch waits on the database the next
        is fetched and decoded, overlapping this process's work with the database's."""
        self.consumer.subscribe(self.topics, listener=_CommitOnRevoke(self))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if len(self._inflight) >= self.concurrency:
                    await self._reap(block=True)
                    continue
                busy = {tp for partitions in self._inflight.values() for tp in partitions}
                assigned = self.consumer.assignment()
                free = [tp for tp in assigned if tp not in busy]
                if busy and not free:
                    await self._reap(block=True)
                    continue
                batch = await self._next_batch(stopping, free if busy else [])
                if batch is None:
                    break
                if batch:
                    task = asyncio.create_task(self._process(batch, stop))
                    self._inflight[task] = set(batch)
                await self._reap(block=False)
        finally:
            stopping.cancel()
            await self.drain()
        log.info("consumer drained", extra={"batches": self.batches, "records": self.records})

    async def drain(self) -> None:
        """Waits for every batch in flight (each commits its offsets as it finishes), then
        raises the first failure among them, if any."""
        failure: BaseException | None = None
        while self._inflight:
            try:
                await self._reap(block=True)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    async def _reap(self, *, block: bool) -> None:
        """Forgets finished batches; a handler's non-transient failure is raised (it stops the
        consumer, whose uncommitted batches are then read again by the next one)."""
        if not self._inflight:
            return
        if block:
            await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
        failure: BaseException | None = None
        for task in [t for t in self._inflight if t.done()]:
            del self._inflight[task]
            if task.exception() is not None:
                failure = failure or task.exception()
        if failure is not None:
            raise failure

    async def _next_batch(
        self, stopping: asyncio.Future[Any], partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, list[Record]] | None:
        """The next batch (from `partitions` only, if given), or None once a stop is asked for.
        aiokafka's getmany can wait without end (joining a group whose coordinator is gone), so
        it races the stop request; a fetch given up this way returns no records, which are
        simply read again later."""
        fetch = asyncio.ensure_future(
            self.consumer.getmany(*partitions, timeout_ms=250, max_records=self.max_batch)
        )
        await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch
            return None
        batch: dict[TopicPartition, list[Record]] = fetch.result()
        return batch

    async def _process(
        self, batch: dict[TopicPartition, list[Record]], stop: asyncio.Event
    ) -> None:
        """Applies a batch in one transaction, then commits its offsets."""
        records = [record for part in batch.values() for record in part]
        try:
            with _processing(records):
                await self._apply(records, stop)
        except Stopping:
            log.warning(
                "stopping with a batch not done (not applied, or its dead letters not sent); "
                "it will be read again",
                extra={"records": len(records)},
            )
            stop.set()
            return
        async with self._commit_lock:
            for tp, part in batch.items():
                self._processed[tp] = part[-1].offset + 1
            await self.commit_processed()
        self.batches += 1
        self.records += len(records)
        BATCH_SIZE.observe(len(records))
        await self.report_lag()

    async def report_lag(self) -> None:
        """Lag per assigned partition from the high-water marks fetches bring back."""
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            position = await self.consumer.position(tp)
            LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))


def _processing(records: Sequence[Record]) -> AbstractContextManager[Span | None]:
    """The batch's span when tracing (a child of its records' trace when they share one; see
    `service.tracing.batch_parent`); nothing otherwise."""
    if not tracing.active():
        return contextlib.nullcontext()
    parent, links = tracing.batch_parent([_traceparent(record) for record in records])
    topics = ", ".join(sorted({record.topic for record in records}))
    return tracing.span(
        f"process {topics}",
        kind=SpanKind.CONSUMER,
        context=parent,
        links=links,
        attributes=lambda: {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topics,
            "messaging.batch.message_count": len(records),
        },
    )


def _traceparent(record: Record) -> str | None:
    for name, value in record.headers:
        if name == h.TRACEPARENT:
            return value.decode("latin-1")
    return None


def _apply_attributes(records: Sequence[Record]) -> tracing.Attributes:
    return {"db.system.name": "postgresql", "messaging.batch.message_count": len(records)}


def consumer_options(bootstrap: str, group: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": MAX_RECORD_BYTES,  # the largest record a topic takes
        "session_timeout_ms": 30_000,
        "heartbeat_interval_ms": 3_000,
    }
