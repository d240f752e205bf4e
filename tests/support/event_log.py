"""A minimal batch handler for testing the consumer loop's ack policy on its own: it records
where each inbound event was read (partition, offset) in the event log."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.runner import Record
from schemas import kafka_headers as h
from service.db.tables import event_log
from service.db.uow import UnitOfWork


def log_rows(records: Sequence[Record]) -> list[dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    for record in records:
        headers = h.header_map(record.headers)
        event_id = headers.get(h.EVENT_ID)
        if not event_id:
            continue
        # The first copy read wins within a batch, as it does across batches.
        rows.setdefault(
            event_id,
            {
                "event_id": event_id,
                "type": headers.get(h.EVENT_TYPE, "unknown"),
                "district_id": (record.key or b"").decode("utf-8", "replace"),
                "source": headers.get(h.SOURCE, "unknown"),
                "received_at": h.received_at(headers.get(h.RECEIVED_AT)),
                "kafka_partition": record.partition,
                "kafka_offset": record.offset,
            },
        )
    return list(rows.values())


class EventLogRecorder:
    async def after_commit(self, engine: AsyncEngine, result: object) -> None:
        pass

    def committed(self, result: object) -> None:
        pass

    async def handle(self, uow: UnitOfWork, records: Sequence[Record]) -> None:
        rows = log_rows(records)
        if not rows:
            return
        stmt = insert(event_log).values(rows)
        # A redelivered or replayed copy keeps the position of the first copy read.
        stmt = stmt.on_conflict_do_update(
            index_elements=[event_log.c.event_id],
            set_={
                "kafka_partition": func.coalesce(
                    event_log.c.kafka_partition, stmt.excluded.kafka_partition
                ),
                "kafka_offset": func.coalesce(event_log.c.kafka_offset, stmt.excluded.kafka_offset),
            },
        )
        await uow.connection.execute(stmt)
