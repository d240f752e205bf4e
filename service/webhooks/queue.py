"""The door's group-commit queue: concurrent requests wait here and are taken together, as one
batch, whenever a batch slot is free.

Every wait is bounded: each request has a deadline (`timeout` from its arrival) for its wait in the
queue and for Kafka, and the queue holds at most `max_queued_events` events; a request beyond
that is refused at once (`Overloaded`). A request whose deadline passes is answered for what it
was waiting on then: Kafka, or the database step a batch ahead of it is stuck in. One in a
database step waits for that step's own bound instead (`Job.expired`), so Kafka's slowness is
never reported as the database's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from service.webhooks.delivery import Delivery
from service.webhooks.parse import ParsedEvent
from service.webhooks.results import IngestResult, Overloaded, Unavailable

# What a batch waits on: the database (claim, then commit or release) or Kafka.
CLAIM, KAFKA, COMMIT = "claim", "kafka", "commit"


@dataclass(eq=False)
class Batch:
    jobs: list[Job]
    stage: str = CLAIM


@dataclass(eq=False)
class Job:
    """One request's events, waiting for a batch to make them durable."""

    events: dict[str, ParsedEvent]  # unique by event id
    count: int  # events in the body, duplicates within it included
    delivery: Delivery
    deadline: float
    result: asyncio.Future[IngestResult]
    batch: Batch | None = None  # None while queued
    queued: bool = True  # counted in the queue's size
    expired: bool = False  # its deadline passed during a database step of its batch


def _dependency(stage: str) -> str:
    return "kafka" if stage == KAFKA else "database"


# Runs a batch; one outcome per job, in order. Never raises (but for cancellation).
RunBatch = Callable[[Batch], Awaitable[list[IngestResult | Unavailable]]]


class GroupCommit:
    """Up to `max_concurrent_batches` batches of at most `max_batch_events` events each (a
    request's events are never split) run at once, so the next batch forms while the previous
    one waits for Kafka."""

    def __init__(
        self,
        run_batch: RunBatch,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        *,
        timeout: float,
        max_queued_events: int,
        max_batch_events: int,
        max_concurrent_batches: int,
    ) -> None:
        self._run = run_batch
        self._spawn = spawn
        self._timeout = timeout
        self._max_queued_events = max_queued_events
        self._queued_events = 0
        self._running: dict[Batch, None] = {}  # in start order
        self._max_batch_events = max_batch_events
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._queue: deque[Job] = deque()
        self._forming = False

    @property
    def queued_events(self) -> int:
        return self._queued_events

    async def submit(
        self, unique: dict[str, ParsedEvent], count: int, delivery: Delivery
    ) -> IngestResult:
        """Queues a request's events (unique by id; `count` in its body) until a batch has made
        them durable, or its deadline has passed."""
        # An empty queue takes any body, so one larger than the bound is not refused for ever.
        if self._queued_events and self._queued_events + len(unique) > self._max_queued_events:
            raise Overloaded(f"{self._queued_events} events queued")
        loop = asyncio.get_running_loop()
        job = Job(unique, count, delivery, loop.time() + self._timeout, loop.create_future())
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

    def _expire(self, job: Job) -> None:
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
        elif batch.stage == KAFKA:
            job.result.set_exception(Unavailable("kafka", "not acknowledged in time"))
        else:
            job.expired = True

    def _unqueue(self, job: Job) -> None:
        if job.queued:
            job.queued = False
            self._queued_events -= len(job.events)

    async def _form_batches(self) -> None:
        """Takes whatever requests have queued whenever a batch slot is free."""
        try:
            while self._queue:
                await self._slots.acquire()
                batch = Batch([])
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

    async def _run_batch(self, batch: Batch) -> None:
        jobs = batch.jobs
        self._running[batch] = None
        try:
            outcomes = await self._run(batch)
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
