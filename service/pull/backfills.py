"""The `backfills` table: backfill requests and their runs' progress. Never commits.

Every statement runs on the caller's connection; the caller's unit of work (service/db/uow.py)
commits. The rules this store holds:

- One running backfill per district: `insert` answers None when one already runs (the partial
  unique index `backfills_one_running` decides, so two concurrent requests cannot both win).
- A run belongs to its `runner`. `claim` takes a running row that nobody runs, or whose runner's
  heartbeat is older than `stale_after` seconds (a runner that died); the run's writes
  (`touch`, `set_start_event`, `finish`) are fenced on the runner, so a runner that was taken
  over learns it (they answer False) and stops.
- `started_at` and `start_event_id` (with `start_read_at`, when it was read: the id is null for
  an empty feed) are set once, by the first run: a resumed run keeps them (the archive step
  counts only records whose version was received before the first start, and the district's
  cursor starts at the event read before any list).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping, any_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.bulk import ids_param
from service.db.tables import RECORD_TABLES, backfills, event_log, sync_districts
from service.settings import Settings

STATUSES = ("running", "succeeded", "failed", "guarded")
REASONS = ("api", "cli", "first_contact", "cursor_refused")
REQUESTED = ("api", "cli")  # asked for by an operator (the others the poller starts by itself)
# A runner beats at least this often (seconds) while it runs ...
HEARTBEAT_SECONDS = 5.0
# ... so a running row whose heartbeat is older than this is an interrupted run that the next
# holder of the district's lease may resume.
STALE_AFTER_SECONDS = 30.0

Counts = dict[str, dict[str, int]]


def new_id() -> str:
    return uuid.uuid4().hex


async def insert(
    conn: AsyncConnection,
    district_id: str,
    *,
    reason: str,
    archive_missing: bool = True,
    force: bool = False,
    backfill_id: str | None = None,
) -> RowMapping | None:
    """A new running backfill for the district; None if one is already running there."""
    if reason not in REASONS:
        raise ValueError(f"unknown backfill reason {reason!r}; expected one of {REASONS}")
    statement = (
        pg_insert(backfills)
        .values(
            id=backfill_id or new_id(),
            district_id=district_id,
            status="running",
            reason=reason,
            archive_missing=archive_missing,
            force=force,
        )
        .on_conflict_do_nothing(
            index_elements=[backfills.c.district_id],
            # A literal, not a parameter: PostgreSQL infers the partial index from the predicate
            # text, which a bound value hides once the statement's plan is generic.
            index_where=text("status = 'running'"),
        )
        .returning(*backfills.c)
    )
    return (await conn.execute(statement)).mappings().first()


async def get(conn: AsyncConnection, backfill_id: str) -> RowMapping | None:
    result = await conn.execute(select(backfills).where(backfills.c.id == backfill_id))
    return result.mappings().first()


async def running(conn: AsyncConnection, district_id: str) -> RowMapping | None:
    """The district's running backfill, if any."""
    result = await conn.execute(
        select(backfills).where(
            backfills.c.district_id == district_id, backfills.c.status == "running"
        )
    )
    return result.mappings().first()


def _unattended(stale_after: float) -> Any:
    return (backfills.c.runner.is_(None)) | (
        backfills.c.heartbeat_at < func.now() - timedelta(seconds=stale_after)
    )


async def pending(
    conn: AsyncConnection, district_ids: list[str], stale_after: float = STALE_AFTER_SECONDS
) -> list[RowMapping]:
    """Running backfills of these districts that nobody runs (never started, or their runner's
    heartbeat is stale): what a poller holding the districts' leases should run."""
    if not district_ids:
        return []
    result = await conn.execute(
        select(backfills)
        .where(
            backfills.c.district_id.in_(district_ids),
            backfills.c.status == "running",
            _unattended(stale_after),
        )
        .order_by(backfills.c.requested_at)
    )
    return list(result.mappings())


async def claim(
    conn: AsyncConnection,
    backfill_id: str,
    runner: str,
    stale_after: float = STALE_AFTER_SECONDS,
) -> RowMapping | None:
    """Makes `runner` the run's runner if it is running and unattended (or already `runner`'s);
    sets `started_at` on the first claim. Returns the row, or None if it is not ours to run."""
    result = await conn.execute(
        update(backfills)
        .where(
            backfills.c.id == backfill_id,
            backfills.c.status == "running",
            _unattended(stale_after) | (backfills.c.runner == runner),
        )
        .values(
            runner=runner,
            heartbeat_at=func.now(),
            started_at=func.coalesce(backfills.c.started_at, func.now()),
        )
        .returning(*backfills.c)
    )
    return result.mappings().first()


def _mine(backfill_id: str, runner: str) -> Any:
    return (
        (backfills.c.id == backfill_id)
        & (backfills.c.runner == runner)
        & (backfills.c.status == "running")
    )


async def set_start_event(
    conn: AsyncConnection, backfill_id: str, runner: str, event_id: str | None
) -> bool:
    """Stores the newest event id read before any list (None: the feed was empty), unless one
    was stored already: a resumed run keeps the first run's."""
    result = await conn.execute(
        update(backfills)
        .where(_mine(backfill_id, runner), backfills.c.start_read_at.is_(None))
        .values(start_event_id=event_id, start_read_at=func.now(), heartbeat_at=func.now())
    )
    if result.rowcount == 1:
        return True
    return await touch(conn, backfill_id, runner)  # read before: still ours?


async def touch(
    conn: AsyncConnection, backfill_id: str, runner: str, counts: Counts | None = None
) -> bool:
    """The heartbeat (and the counts, if given); False if the run is no longer `runner`'s."""
    values: dict[str, Any] = {"heartbeat_at": func.now()}
    if counts is not None:
        values["counts"] = counts
    result = await conn.execute(
        update(backfills).where(_mine(backfill_id, runner)).values(**values)
    )
    return result.rowcount == 1


async def finish(
    conn: AsyncConnection,
    backfill_id: str,
    runner: str,
    status: str,
    *,
    counts: Counts | None = None,
    missing: dict[str, int] | None = None,
    archived: dict[str, int] | None = None,
    error: str | None = None,
) -> bool:
    """Ends the run (`succeeded`, `failed` or `guarded`); False if it was not `runner`'s."""
    if status not in STATUSES or status == "running":
        raise ValueError(f"a backfill ends succeeded, failed or guarded, not {status!r}")
    values: dict[str, Any] = {
        "status": status,
        "finished_at": func.now(),
        "heartbeat_at": func.now(),
        "error": error,
    }
    for name, value in (("counts", counts), ("missing", missing), ("archived", archived)):
        if value is not None:
            values[name] = value
    result = await conn.execute(
        update(backfills).where(_mine(backfill_id, runner)).values(**values)
    )
    return result.rowcount == 1


async def fail_unstarted(conn: AsyncConnection, backfill_id: str, error: str) -> bool:
    """Ends a running backfill nobody can run (its district has no token any more, say)."""
    result = await conn.execute(
        update(backfills)
        .where(backfills.c.id == backfill_id, backfills.c.status == "running")
        .values(status="failed", finished_at=func.now(), error=error)
    )
    return result.rowcount == 1


async def last_finished(conn: AsyncConnection, district_id: str) -> RowMapping | None:
    """The district's latest succeeded or guarded backfill (its counts make an ETA)."""
    result = await conn.execute(
        select(backfills)
        .where(
            backfills.c.district_id == district_id,
            backfills.c.status.in_(("succeeded", "guarded")),
        )
        .order_by(backfills.c.finished_at.desc())
        .limit(1)
    )
    return result.mappings().first()


async def has_token(conn: AsyncConnection, settings: Settings, district_id: str) -> bool:
    """A district can be backfilled when a token is known for it: discovered or given to a
    poller (its `sync_districts` row has a token source), or given to this process."""
    if any(district_id == known for known, _ in settings.clever_district_tokens):
        return True
    source = await conn.scalar(
        select(sync_districts.c.token_source).where(sync_districts.c.id == district_id)
    )
    return source is not None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def as_json(row: RowMapping) -> dict[str, Any]:
    """The backfill as `GET /v1/backfills/{id}` shows it (contract v2), plus how it was asked
    for (`reason`, `archive_missing`, `force`) and where its cursor starts."""
    return {
        "id": row["id"],
        "district_id": row["district_id"],
        "status": row["status"],
        "reason": row["reason"],
        "archive_missing": row["archive_missing"],
        "force": row["force"],
        "requested_at": _iso(row["requested_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "heartbeat_at": _iso(row["heartbeat_at"]),
        "start_event_id": row["start_event_id"],
        "start_read_at": _iso(row["start_read_at"]),
        "counts": row["counts"],
        "missing": row["missing"],
        "archived": row["archived"],
        "error": row["error"],
    }


# --- the roster's side of the archive step (reads only) -----------------------------------------


async def waiting_before(conn: AsyncConnection, district_id: str, received_before: datetime) -> int:
    """Events of the district received before `received_before` that the consumer has not
    settled yet (event log `accepted`). The archive step waits for none: a record such an event
    creates is not in the roster yet, so it could never be archived.

    The event log has no index by district or status (migration 0006 keeps the door's insert
    cheap), so this scans it: twice a second, only while a backfill waits to archive."""
    result = await conn.scalar(
        select(func.count())
        .select_from(event_log)
        .where(
            event_log.c.district_id == district_id,
            event_log.c.status == "accepted",
            event_log.c.received_at < received_before,
        )
    )
    return int(result or 0)


async def live_ids(
    conn: AsyncConnection, kind: str, district_id: str, received_before: datetime
) -> set[str]:
    """Ids of the district's live (not deleted) records of `kind` whose stored version came from
    an event received before `received_before` (the run's first start), or from an event the log
    no longer holds. A record an event received during the run wrote is not the run's to
    archive: Clever may have created it after its list was read. (The write time would not do:
    an event received before the run but applied during it, by a consumer behind, is the run's.)
    """
    table = RECORD_TABLES[kind]
    result = await conn.execute(
        select(table.c.id)
        .select_from(table.outerjoin(event_log, event_log.c.event_id == table.c.version_event))
        .where(
            table.c.district_id == district_id,
            table.c.deleted.is_(False),
            or_(event_log.c.received_at.is_(None), event_log.c.received_at < received_before),
        )
    )
    return set(result.scalars())


async def live_count(conn: AsyncConnection, kind: str, district_id: str) -> int:
    """The district's live records of `kind` (the guard's denominator)."""
    table = RECORD_TABLES[kind]
    result = await conn.scalar(
        select(func.count())
        .select_from(table)
        .where(table.c.district_id == district_id, table.c.deleted.is_(False))
    )
    return int(result or 0)


async def stored_objects(
    conn: AsyncConnection, kind: str, ids: list[str]
) -> list[tuple[dict[str, Any], datetime | None]]:
    """The objects the roster holds for these records (what their `*.deleted` events carry),
    each with its stored version's event time (null in rows written before migration 0007)."""
    table = RECORD_TABLES[kind]
    result = await conn.execute(
        select(table.c.data, table.c.version_created)
        .where(table.c.id == any_(ids_param(ids)))
        .order_by(table.c.id)
    )
    return [(dict(data), created) for data, created in result]
