"""The consumer loop shared by every consumer process.

Ack policy, explicitly: a batch from `getmany` (bounded size) is handed to the handler inside one
database transaction; offsets are committed to Kafka only after that transaction commits. A crash
between the two replays the batch, which the handlers make harmless by being idempotent. On
partition revocation the in-flight batch finishes and its offsets are committed before the
partitions move; SIGTERM drains the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.uow import UnitOfWork

log = logging.getLogger(__name__)


class Record(Protocol):
    """What the handlers read of an aiokafka ConsumerRecord (aiokafka ships no type hints)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class BatchHandler(Protocol):
    async def handle(self, uow: UnitOfWork, records: Sequence[Record]) -> None:
        """Writes the batch's effects through `uow`; never commits."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError, ConnectionError, OSError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Wait for the batch in hand to reach the database, then hand over its offsets.
        async with self._runner.batch_lock:
            await self._runner.commit_processed(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)}
        )


class ConsumerRunner:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        engine: AsyncEngine,
        handler: BatchHandler,
        *,
        topics: Sequence[str],
        max_batch: int,
        max_retry_delay: float = 10.0,
    ) -> None:
        self.consumer = consumer
        self.engine = engine
        self.handler = handler
        self.topics = list(topics)
        self.max_batch = max_batch
        self.max_retry_delay = max_retry_delay
        self.batch_lock = asyncio.Lock()
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

    async def _apply(self, records: Sequence[Record]) -> None:
        """One transaction for the batch; transient database failures retry with backoff."""
        delay = 0.1
        while True:
            try:
                async with UnitOfWork(self.engine) as uow:
                    await self.handler.handle(uow, records)
                    await uow.commit()
                return
            except Exception as exc:
                if not _transient(exc):
                    raise
                log.warning(
                    "database unavailable; retrying batch",
                    extra={
                        "error": type(exc).__name__,
                        "records": len(records),
                        "retry_in_s": delay,
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe(self.topics, listener=_CommitOnRevoke(self))
        while not stop.is_set():
            batch: dict[TopicPartition, list[Record]] = await self.consumer.getmany(
                timeout_ms=250, max_records=self.max_batch
            )
            if not batch:
                continue
            async with self.batch_lock:
                records = [record for part in batch.values() for record in part]
                await self._apply(records)
                for tp, part in batch.items():
                    self._processed[tp] = part[-1].offset + 1
                await self.commit_processed()
                self.batches += 1
                self.records += len(records)
        log.info("consumer drained", extra={"batches": self.batches, "records": self.records})


def consumer_options(bootstrap: str, group: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "session_timeout_ms": 30_000,
        "heartbeat_interval_ms": 3_000,
    }
