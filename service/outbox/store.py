"""The outbox table: appended to inside the roster's transactions, drained by the relay.

Never commits: the consumer's unit of work commits the change and its messages together, and the
relay's commits the `sent_at` marks together with releasing its shards.

Each row keeps the trace context (W3C `traceparent`) of the transaction that wrote it, when that
process traces (service/tracing.py): the relay's send continues that trace.

A row the broker will never accept is parked (`parked_at`, `park_error`): the claim skips it until
an operator re-queues it. The rows after it, of its key too, go on (see `service/outbox/relay.py`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service import tracing
from service.db.packed import text_array
from service.db.tables import OUTBOX_SHARDS

NOTIFY_CHANNEL = "roster_outbox"


@dataclass(frozen=True)
class Outgoing:
    """One downstream message before it has its sequence number: any topic, any key (the
    writers build them: `service/roster/changes.py`, `service/programs/alerts.py`)."""

    topic: str
    key: str
    type: str
    district_id: str
    data: dict[str, Any]


def shard_of(key: str) -> int:
    return zlib.crc32(key.encode()) % OUTBOX_SHARDS


async def append(conn: AsyncConnection, messages: Sequence[Outgoing]) -> None:
    """Numbers the messages per (topic, key), in order, and stores them for the relay.

    Two set-based statements whatever the count. The sequence rows are locked until commit, and
    the writers of one key (one district) are serialised anyway by the district lock, so numbers
    follow commit order. A NOTIFY (delivered at commit, never for a rollback) wakes the relay.
    """
    if not messages:
        return
    counts: dict[tuple[str, str], int] = {}
    for m in messages:
        stream = (m.topic, m.key)
        counts[stream] = counts.get(stream, 0) + 1
    streams = sorted(counts)  # a fixed lock order
    result = await conn.execute(
        text(
            """
            INSERT INTO outbox_sequences AS s (topic, message_key, sequence)
            SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:keys AS text[]),
                                 CAST(:counts AS bigint[]))
            ON CONFLICT (topic, message_key) DO UPDATE SET sequence = s.sequence + EXCLUDED.sequence
            RETURNING topic, message_key, sequence
            """
        ),
        {
            "topics": [t for t, _ in streams],
            "keys": [k for _, k in streams],
            "counts": [counts[s] for s in streams],
        },
    )
    following = {(t, k): last - counts[(t, k)] + 1 for t, k, last in result}
    sequences = []
    for m in messages:
        stream = (m.topic, m.key)
        sequences.append(following[stream])
        following[stream] += 1
    columns = {
        "topics": [m.topic for m in messages],
        "keys": [m.key for m in messages],
        "types": [m.type for m in messages],
        "districts": [m.district_id for m in messages],
        "data": [
            orjson.dumps({**m.data, "sequence": seq}).decode()
            for m, seq in zip(messages, sequences, strict=True)
        ],
    }
    params: dict[str, Any] = {
        "shards": [shard_of(m.key) for m in messages],
        "sequences": sequences,
        # The writing transaction's span (the consumer's batch, an API request), if tracing.
        "traceparent": tracing.current_traceparent(),
    }
    sources: dict[str, str] = {}
    for name, values in columns.items():
        sources[name], params[name] = text_array(name, values)
    await conn.execute(
        text(
            f"""
            INSERT INTO outbox (topic, message_key, shard, type, district_id, sequence, data,
                                traceparent)
            SELECT t, k, s, ty, di, se, CAST(d AS json), CAST(:traceparent AS text)
              FROM unnest({sources["topics"]}, {sources["keys"]},
                          CAST(:shards AS smallint[]), {sources["types"]},
                          {sources["districts"]}, CAST(:sequences AS bigint[]),
                          {sources["data"]}) AS u(t, k, s, ty, di, se, d)
            """
        ),
        params,
    )
    await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


@dataclass(frozen=True)
class Pending:
    id: int
    topic: str
    key: str
    type: str
    district_id: str
    sequence: int
    data: bytes
    written_at: datetime
    traceparent: str | None = None  # of the transaction that wrote it (None: it did not trace)


async def claim(conn: AsyncConnection, limit: int) -> list[Pending]:
    """Locks every shard no other relay holds and returns their oldest unsent rows, in commit
    order per key. The shard locks last until the caller's transaction ends, so no other relay
    publishes these keys meanwhile; a relay that dies releases them with its connection."""
    shards = [
        row[0]
        for row in await conn.execute(
            text("SELECT shard FROM outbox_shards ORDER BY shard FOR UPDATE SKIP LOCKED")
        )
    ]
    if not shards:
        return []
    rows = await conn.execute(
        text(
            """
            SELECT id, topic, message_key, type, district_id, sequence, CAST(data AS text),
                   written_at, traceparent
              FROM outbox
             WHERE sent_at IS NULL AND parked_at IS NULL
               AND shard = ANY(CAST(:shards AS smallint[]))
             ORDER BY id
             LIMIT :limit
            """
        ),
        {"shards": shards, "limit": limit},
    )
    return [Pending(r[0], r[1], r[2], r[3], r[4], r[5], r[6].encode(), r[7], r[8]) for r in rows]


async def mark_sent(conn: AsyncConnection, ids: Sequence[int]) -> None:
    await conn.execute(
        text("UPDATE outbox SET sent_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"),
        {"ids": list(ids)},
    )


async def park(conn: AsyncConnection, parked: Sequence[tuple[int, str]]) -> None:
    """Sets rows aside with the error the broker gave for each: (id, error)."""
    await conn.execute(
        text(
            """
            UPDATE outbox SET parked_at = now(), park_error = p.error
              FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[])) AS p(id, error)
             WHERE outbox.id = p.id
            """
        ),
        {"ids": [i for i, _ in parked], "errors": [e for _, e in parked]},
    )


@dataclass(frozen=True)
class Parked:
    id: int
    topic: str
    key: str
    type: str
    district_id: str
    sequence: int
    written_at: datetime
    parked_at: datetime
    error: str


async def list_parked(conn: AsyncConnection, limit: int = 1000) -> list[Parked]:
    """Parked rows still unsent, oldest first."""
    rows = await conn.execute(
        text(
            """
            SELECT id, topic, message_key, type, district_id, sequence, written_at, parked_at,
                   park_error
              FROM outbox
             WHERE parked_at IS NOT NULL AND sent_at IS NULL
             ORDER BY id
             LIMIT :limit
            """
        ),
        {"limit": limit},
    )
    return [Parked(*r) for r in rows]


async def requeue(conn: AsyncConnection, row_id: int) -> bool:
    """Puts a parked row back in line (its cause fixed); False if it is not parked. A NOTIFY at
    commit wakes the relays."""
    result = await conn.execute(
        text(
            """
            UPDATE outbox SET parked_at = NULL, park_error = NULL
             WHERE id = :id AND parked_at IS NOT NULL AND sent_at IS NULL
            RETURNING id
            """
        ),
        {"id": row_id},
    )
    if result.first() is None:
        return False
    await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    return True


@dataclass(frozen=True)
class Backlog:
    waiting: int  # rows waiting for a relay (parked ones apart)
    parked: int
    oldest_age_seconds: float  # since the oldest waiting row's transaction began; 0: none waits


async def backlog(conn: AsyncConnection) -> Backlog:
    """What waits for a relay: the rows, the parked rows, and the age of the oldest waiting one
    (one pass over the unsent rows, which the count reads anyway)."""
    result = await conn.execute(
        text(
            "SELECT count(*) FILTER (WHERE parked_at IS NULL),"
            " count(*) FILTER (WHERE parked_at IS NOT NULL),"
            " coalesce(extract(epoch FROM clock_timestamp()"
            " - min(written_at) FILTER (WHERE parked_at IS NULL)), 0)"
            " FROM outbox WHERE sent_at IS NULL"
        )
    )
    waiting, parked, age = result.one()
    return Backlog(int(waiting), int(parked), max(0.0, float(age)))


async def prune(conn: AsyncConnection, retention_seconds: int, limit: int = 10_000) -> int:
    """Deletes up to `limit` rows sent longer ago than the retention period."""
    result = await conn.execute(
        text(
            """
            DELETE FROM outbox WHERE id IN (
                SELECT id FROM outbox
                 WHERE sent_at IS NOT NULL
                   AND sent_at < now() - make_interval(secs => :retention)
                 ORDER BY sent_at
                 LIMIT :limit)
            """
        ),
        {"retention": retention_seconds, "limit": limit},
    )
    return int(getattr(result, "rowcount", 0) or 0)
