"""The event log: one row per Clever event id, the only code that reads or writes `event_log`.

Its writers, each through its caller's connection (the caller's unit of work commits):
- the webhook door claims an id (`claim`) inside the transaction that stays open while the event
  is published, and releases the claims Kafka did not acknowledge (`release`); a send that lands
  late is claimed again on its own;
- the consumer reads what is settled (`settled_events`), records each event's outcome
  (`record_outcomes`) and clears the pending mark of dead letters Kafka acknowledged
  (`dead_letters_sent`);
- re-drive sets dead-lettered events back to `accepted`, marked (`reset_dead_lettered`), and
  clears the mark once their copies are acknowledged (`clear_redrive_marks`).
The door's statements go straight to the driver (asyncpg: its hot path); the others through
SQLAlchemy.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import RowMapping, any_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.bulk import ids_param, insert_rows
from service.db.packed import text_array
from service.db.tables import event_log

SETTLED = ("applied", "stale", "dead_lettered")

_RELEASE = "DELETE FROM event_log WHERE event_id = ANY($1::text[])"


class Arrived(Protocol):
    """What the event log keeps of an event itself (the door's parsed event)."""

    @property
    def event_type(self) -> str: ...

    @property
    def district_id(self) -> str: ...


class Received(Protocol):
    """What the event log keeps of how an event came in (the door's delivery)."""

    @property
    def source(self) -> str: ...

    @property
    def received_iso(self) -> str: ...


async def claim(driver: Any, events: Mapping[str, tuple[Arrived, Received]]) -> set[str]:
    """Inserts the event-log rows of `events` through the driver connection; returns the ids
    that were not there before."""
    # Sorted ids: concurrent batches sharing ids lock rows in the same order, so never deadlock.
    ids = sorted(events)
    rows = [events[eid] for eid in ids]
    # Columns packed into one string each (service/db/packed.py): a page of 100 events costs
    # the door five parameter values, not 500 array elements. The received time goes as the
    # text its delivery formatted once (PostgreSQL reads it back exactly), not as a datetime
    # per event that the driver would convert one by one.
    sources: list[str] = []
    args: list[Any] = []
    columns: tuple[list[str], ...] = (
        ids,
        [p.event_type for p, _ in rows],
        [p.district_id for p, _ in rows],
        [d.source for _, d in rows],
        [d.received_iso for _, d in rows],
    )
    for position, values in enumerate(columns, start=1):
        source, value = text_array("", values, placeholder=f"${position}")
        sources.append(source)
        args.append(value)
    claimed = await driver.fetch(_claim_statement(tuple(sources)), *args)
    return {row[0] for row in claimed}


@functools.cache
def _claim_statement(sources: tuple[str, ...]) -> str:
    """The claim for one choice of packed or array per column (at most 32 statements)."""
    ids, types, districts, origins, received = sources
    return f"""
        INSERT INTO event_log (event_id, type, district_id, source, status, received_at)
        SELECT id, type, district, source, 'accepted', received
        FROM unnest({ids}, {types}, {districts}, {origins}, CAST({received} AS timestamptz[]))
            AS claim(id, type, district, source, received)
        ORDER BY id
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    """


async def release(driver: Any, ids: Iterable[str]) -> None:
    """Deletes the claims of these ids (their events are not in Kafka), in lock order."""
    await driver.execute(_RELEASE, sorted(ids))


class Settled(NamedTuple):
    status: str
    pending: bool  # dead-lettered, its dead-letter record not yet acknowledged by Kafka
    error: str | None


async def settled_events(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Settled]:
    """Events whose outcome is already decided (a redelivery or replay skips them), by id."""
    if not ids:
        return {}
    rows = await conn.execute(
        select(
            event_log.c.event_id,
            event_log.c.status,
            event_log.c.dead_letter_pending,
            event_log.c.error,
        ).where(event_log.c.event_id == any_(ids_param(ids)), event_log.c.status.in_(SETTLED))
    )
    return {row[0]: Settled(row[1], row[2], row[3]) for row in rows}


async def dead_letters_sent(conn: AsyncConnection, ids: Sequence[str]) -> None:
    """Kafka has acknowledged these events' dead-letter records."""
    if ids:
        await conn.execute(
            update(event_log)
            .where(event_log.c.event_id == any_(ids_param(ids)), event_log.c.dead_letter_pending)
            .values(dead_letter_pending=False)
        )


async def record_outcomes(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Writes each event's outcome; the door's row (source, received time) is kept."""
    if not rows:
        return
    updated = ("status", "error", "applied_at", "kafka_partition", "kafka_offset")
    kept = [c for c in (*updated, "dead_letter_pending") if c in rows[0]]
    await insert_rows(
        conn,
        event_log,
        rows,
        conflict="ON CONFLICT (event_id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in kept),
    )


async def reset_dead_lettered(
    conn: AsyncConnection, ids: Collection[str], requested_at: datetime
) -> list[str]:
    """Sets these events back to `accepted`, marked with `requested_at`, if they are still
    dead-lettered or marked by a run that did not finish; returns the ids reset, sorted."""
    reset = await conn.execute(
        update(event_log)
        .where(
            event_log.c.event_id.in_(ids),
            (event_log.c.status == "dead_lettered")
            | ((event_log.c.status == "accepted") & event_log.c.redrive_requested_at.is_not(None)),
        )
        .values(
            status="accepted",
            error=None,
            applied_at=None,
            redrive_requested_at=requested_at,
            dead_letter_pending=False,  # it is in the dead-letter topic: read from there
        )
        .returning(event_log.c.event_id)
    )
    return sorted(row[0] for row in reset)


async def clear_redrive_marks(
    conn: AsyncConnection, ids: Sequence[str], requested_at: datetime
) -> None:
    """Clears the mark of the events this run re-published (a later run's mark is kept)."""
    await conn.execute(
        update(event_log)
        .where(event_log.c.event_id.in_(ids), event_log.c.redrive_requested_at == requested_at)
        .values(redrive_requested_at=None)
    )


async def find(conn: AsyncConnection, event_id: str) -> RowMapping | None:
    """The event's row, or None if the id was never seen."""
    result = await conn.execute(select(event_log).where(event_log.c.event_id == event_id))
    return result.mappings().first()
