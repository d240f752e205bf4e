"""Sending records to one partition: appended to the producer's open batch, or as a record batch
of their own, one sender per partition at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

SendFuture = asyncio.Future[Any]
# (record id, key, value, headers): the id names the record to the caller's `sent` callback.
Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]
# From this many records for one partition, the door builds a record batch of its own; fewer go
# through send(), which appends them to the partition's open batch in the producer, shared with
# concurrent ingest batches. A batch of its own costs the broker a record batch however few its
# records, and aiokafka queues it only once the partition's previous batch is on its way, so
# concurrent single-event requests each waited a round trip of their own. Measured on single
# events (64 connections): API CPU 292-338 us/event with send() vs 376-448 with a batch per
# partition each, broker CPU about half; pages of 100 (about 8 records per partition) stay
# cheaper with batches of their own (58-62 vs 64-67 us/event).
OWN_BATCH_FROM = 4


def succeeded(future: SendFuture) -> bool:
    """Whether Kafka acknowledged the send."""
    return future.done() and not future.cancelled() and future.exception() is None


class PartitionSender:
    """Sends records to the partitions of one topic (see `OWN_BATCH_FROM`)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._locks: dict[int, asyncio.Lock] = {}

    async def send(
        self,
        producer: AIOKafkaProducer,
        partition: int,
        records: list[Record],
        sent: Callable[[str, SendFuture], None],
    ) -> None:
        """Hands the records to the producer, in order; `sent(id, future)` as each is on its
        way (the records of one record batch share its future)."""
        # aiokafka queues one record batch per partition and, with several callers waiting for
        # that slot, its wait loop deducts the total elapsed time on every pass and gives up
        # early (aiokafka 0.14 add_batch). One sender per partition at a time avoids that, and
        # keeps concurrent ingest batches in submission order on the partition.
        async with self._locks.setdefault(partition, asyncio.Lock()):
            if len(records) < OWN_BATCH_FROM:
                for rid, key, value, headers in records:
                    future = await producer.send(
                        self.topic, value=value, key=key, partition=partition, headers=headers
                    )
                    sent(rid, future)
                return
            batch = producer.create_batch()
            members: list[str] = []

            async def submit() -> None:
                nonlocal batch, members
                future = await producer.send_batch(batch, self.topic, partition=partition)
                for member in members:
                    sent(member, future)
                batch, members = producer.create_batch(), []

            for rid, key, value, headers in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    await submit()  # full: send it, start the next one
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise ValueError(f"event {rid} does not fit in a record batch")
                members.append(rid)
            if members:
                await submit()
