"""The pull doors' state in PostgreSQL: `sync_districts` (per district its token's source, sync
state, Events API cursor and lease) and `pollers` (heartbeats). The only code that writes them.

Every function takes its caller's connection and never commits (service/db/uow.py): the poller's
lease round, its district tasks and discovery own their units of work.

Leases: `lease_owner` holds a district until `lease_expires_at` (the database's clock, so pollers
on several hosts agree). A poller claims free or expired leases, renews the ones it holds and
releases what it does not want; every write of a district's cursor or state is fenced
(`WHERE lease_owner = <me>`) and tells whether it still held the lease, so a poller that lost a
district can never move its cursor.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.tables import SYNC_STATES

_HEARTBEAT = text(
    """
    INSERT INTO pollers (id, seen_at) VALUES (:me, now())
    ON CONFLICT (id) DO UPDATE SET seen_at = now()
    """
)
_LIVE_POLLERS = text(
    "SELECT count(*) FROM pollers WHERE seen_at > now() - make_interval(secs => :ttl)"
)
_FORGET_DEAD = text(
    "DELETE FROM pollers WHERE seen_at < now() - make_interval(secs => :ttl) OR seen_at IS NULL"
)
_FORGET = text("DELETE FROM pollers WHERE id = :me")
_WITH_TOKEN = text("SELECT count(*) FROM sync_districts WHERE token_source IS NOT NULL")
_RENEW = text(
    """
    UPDATE sync_districts
    SET lease_expires_at = now() + make_interval(secs => :ttl)
    WHERE lease_owner = :me AND token_source IS NOT NULL
    RETURNING id
    """
)
# Free or expired leases of districts with a token, in id order; a row another poller is
# claiming at the same moment is skipped, not waited for.
_CLAIM = text(
    """
    UPDATE sync_districts SET lease_owner = :me,
        lease_expires_at = now() + make_interval(secs => :ttl)
    WHERE id IN (
        SELECT id FROM sync_districts
        WHERE token_source IS NOT NULL
          AND (lease_owner IS NULL OR lease_expires_at <= now())
        ORDER BY id
        LIMIT :most
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
    """
)
_RELEASE = text(
    """
    UPDATE sync_districts SET lease_owner = NULL, lease_expires_at = NULL
    WHERE lease_owner = :me AND (id = ANY(CAST(:ids AS text[])) OR token_source IS NULL)
    """
)
_RELEASE_ALL = text(
    "UPDATE sync_districts SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = :me"
)
# A district given a token: a new row, or a known one's token source; one that had none becomes
# `backfilling` (no cursor yet: it is backfilled first) or `polling`. `token_invalid` stays until
# the lease holder's next try with the re-discovered token succeeds.
_DISCOVERED = text(
    """
    INSERT INTO sync_districts AS d (id, token_source, sync_state)
    SELECT id, source, 'backfilling'
    FROM unnest(CAST(:ids AS text[]), CAST(:sources AS text[])) AS t(id, source)
    ON CONFLICT (id) DO UPDATE SET
        token_source = EXCLUDED.token_source,
        sync_state = CASE WHEN d.sync_state = 'no_token'
            THEN CASE WHEN d.cursor_event_id IS NULL THEN 'backfilling' ELSE 'polling' END
            ELSE d.sync_state END,
        updated_at = now()
    WHERE d.token_source IS DISTINCT FROM EXCLUDED.token_source OR d.sync_state = 'no_token'
    """
)
_TOKEN_GONE = text(
    """
    UPDATE sync_districts SET token_source = NULL, sync_state = 'no_token', updated_at = now()
    WHERE id <> ALL(CAST(:ids AS text[])) AND (token_source IS NOT NULL OR sync_state <> 'no_token')
    """
)
# A district the roster knows (from any door) without a token: listed, `no_token`.
_KNOWN_WITHOUT_TOKEN = text(
    """
    INSERT INTO sync_districts (id, sync_state)
    SELECT id, 'no_token' FROM districts WHERE NOT deleted AND id <> ALL(CAST(:ids AS text[]))
    ON CONFLICT (id) DO NOTHING
    """
)
_BY_STATE = text("SELECT sync_state, count(*) FROM sync_districts GROUP BY sync_state")
_LIST = text(
    """
    SELECT s.*, r.data->>'name' AS name
    FROM sync_districts s LEFT JOIN districts r ON r.id = s.id
    ORDER BY s.id
    """
)
_ONE = text("SELECT * FROM sync_districts WHERE id = :id")
_PAGE_STORED = text(
    """
    UPDATE sync_districts SET cursor_event_id = :event_id, cursor_created_at = :created,
        last_polled_at = now(), last_event_at = now(), last_error = NULL,
        sync_state = 'polling', updated_at = now()
    WHERE id = :id AND lease_owner = :me
    RETURNING id
    """
)
_DRAINED = text(
    """
    UPDATE sync_districts SET last_polled_at = now(), last_drained_at = now(), last_error = NULL,
        sync_state = 'polling', updated_at = now()
    WHERE id = :id AND lease_owner = :me
    RETURNING last_drained_at
    """
)
_STATE = text(
    """
    UPDATE sync_districts SET sync_state = :state, last_error = :error, updated_at = now()
    WHERE id = :id AND lease_owner = :me
    RETURNING id
    """
)
_ERROR = text(
    """
    UPDATE sync_districts SET last_error = :error, last_polled_at = now(), updated_at = now()
    WHERE id = :id AND lease_owner = :me
    RETURNING id
    """
)


@dataclass(frozen=True)
class SyncDistrict:
    """One row of `sync_districts` (and the roster's name for the district, when listed)."""

    id: str
    token_source: str | None
    sync_state: str
    cursor_event_id: str | None
    cursor_created_at: datetime | None
    last_polled_at: datetime | None
    last_drained_at: datetime | None
    last_event_at: datetime | None
    last_error: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    updated_at: datetime
    name: str | None = None


def _row(mapping: RowMapping) -> SyncDistrict:
    return SyncDistrict(**{k: v for k, v in mapping.items() if k in _FIELDS})


_FIELDS = frozenset(SyncDistrict.__dataclass_fields__)


# --- pollers ------------------------------------------------------------------------------------


async def heartbeat(conn: AsyncConnection, me: str) -> None:
    """This poller is alive now."""
    await conn.execute(_HEARTBEAT, {"me": me})


async def live_pollers(conn: AsyncConnection, ttl: float) -> int:
    """Pollers seen within `ttl` seconds; a dead one's older rows are deleted on the way."""
    await conn.execute(_FORGET_DEAD, {"ttl": ttl * 10})  # long gone: only tidied up
    return int(await conn.scalar(_LIVE_POLLERS, {"ttl": ttl}) or 0)


async def forget_poller(conn: AsyncConnection, me: str) -> None:
    """An orderly stop: this poller no longer counts toward the fair share."""
    await conn.execute(_FORGET, {"me": me})


# --- leases -------------------------------------------------------------------------------------


async def with_token(conn: AsyncConnection) -> int:
    """Districts that a poller can poll (those with a token)."""
    return int(await conn.scalar(_WITH_TOKEN) or 0)


async def renew(conn: AsyncConnection, me: str, ttl: float) -> set[str]:
    """Extends every lease `me` still holds (of a district that still has a token) by `ttl`
    seconds from now; returns their ids. A lease `me` thought it held and is not among them is
    lost; one among them it did not know of (a round whose commit timed out) is its again."""
    rows = await conn.execute(_RENEW, {"me": me, "ttl": ttl})
    return {row[0] for row in rows}


async def claim(conn: AsyncConnection, me: str, most: int, ttl: float) -> list[str]:
    """Takes up to `most` free or expired leases for `ttl` seconds; returns their ids."""
    if most <= 0:
        return []
    rows = await conn.execute(_CLAIM, {"me": me, "most": most, "ttl": ttl})
    return sorted(row[0] for row in rows)


async def release(conn: AsyncConnection, me: str, ids: Collection[str]) -> None:
    """Gives up the leases `me` holds among `ids`, and any it holds of districts without a
    token."""
    await conn.execute(_RELEASE, {"me": me, "ids": list(ids)})


async def release_all(conn: AsyncConnection, me: str) -> None:
    """An orderly stop: every lease `me` holds is free at once (no wait for its expiry)."""
    await conn.execute(_RELEASE_ALL, {"me": me})


# --- discovery ----------------------------------------------------------------------------------


async def discovered(conn: AsyncConnection, tokens: Mapping[str, str]) -> None:
    """Records a discovery: `tokens` maps each district with a token to the token's source
    (`discovered` or `manual`). Districts it lacks (but the roster or this table knows) are
    `no_token`."""
    ids = sorted(tokens)
    if ids:
        await conn.execute(_DISCOVERED, {"ids": ids, "sources": [tokens[i] for i in ids]})
    await conn.execute(_TOKEN_GONE, {"ids": ids})
    await conn.execute(_KNOWN_WITHOUT_TOKEN, {"ids": ids})


# --- one district (fenced on the lease) ---------------------------------------------------------


async def district(conn: AsyncConnection, district_id: str) -> SyncDistrict | None:
    row = (await conn.execute(_ONE, {"id": district_id})).mappings().first()
    return None if row is None else _row(row)


async def page_stored(
    conn: AsyncConnection, me: str, district_id: str, event_id: str, created: datetime | None
) -> bool:
    """Moves the cursor past a page Kafka acknowledged (`event_id`, its last event, created at
    `created`); False if `me` no longer holds the district's lease (nothing written)."""
    rows = await conn.execute(
        _PAGE_STORED, {"id": district_id, "me": me, "event_id": event_id, "created": created}
    )
    return rows.first() is not None


async def drained(conn: AsyncConnection, me: str, district_id: str) -> datetime | None:
    """The feed was read to its end now; returns that time (the database's), or None if `me`
    no longer holds the lease."""
    row = (await conn.execute(_DRAINED, {"id": district_id, "me": me})).first()
    return None if row is None else row[0]


async def set_state(
    conn: AsyncConnection, me: str, district_id: str, state: str, error: str | None = None
) -> bool:
    """Sets the district's sync state (and last error); False without the lease."""
    if state not in SYNC_STATES:
        raise ValueError(f"unknown sync state {state!r}")
    rows = await conn.execute(_STATE, {"id": district_id, "me": me, "state": state, "error": error})
    return rows.first() is not None


async def failed(conn: AsyncConnection, me: str, district_id: str, error: str) -> bool:
    """Records a failed poll (the state stays); False without the lease."""
    rows = await conn.execute(_ERROR, {"id": district_id, "me": me, "error": error})
    return rows.first() is not None


# --- reads for everyone -------------------------------------------------------------------------


async def by_state(conn: AsyncConnection) -> dict[str, int]:
    """How many districts are in each sync state (every state present, 0 if none)."""
    counts = dict.fromkeys(SYNC_STATES, 0)
    for state, count in await conn.execute(_BY_STATE):
        counts[state] = int(count)
    return counts


async def database_now(conn: AsyncConnection) -> datetime:
    """The database's clock (the one leases expire by)."""
    now: datetime = await conn.scalar(text("SELECT now()"))
    return now


async def list_districts(conn: AsyncConnection) -> list[SyncDistrict]:
    """Every district the service knows, by id, with the roster's name for it."""
    rows = (await conn.execute(_LIST)).mappings().all()
    return [_row(row) for row in rows]


# --- a backfill's district writes, and one district's lease (service/pull/backfill.py, and
# `roster backfill` when no poller holds the district) ------------------------------------------

_BACKFILLED = """
    UPDATE sync_districts SET cursor_event_id = :event_id, cursor_created_at = :created,
        last_error = NULL, sync_state = 'polling', updated_at = now()
    WHERE id = :id {fence}
    RETURNING id
"""
_BACKFILLED_FENCED = text(_BACKFILLED.format(fence="AND lease_owner = :me"))
_BACKFILLED_ANY = text(_BACKFILLED.format(fence=""))
_ENSURE = text(
    """
    INSERT INTO sync_districts AS d (id, token_source, sync_state)
    VALUES (:id, :source, :state)
    ON CONFLICT (id) DO UPDATE SET sync_state = EXCLUDED.sync_state,
        token_source = COALESCE(d.token_source, EXCLUDED.token_source), updated_at = now()
    """
)
# Takes the district's lease if it is free or expired, or renews it if `me` holds it; a row is
# made for a district this table does not know yet (its token given to this process only).
_HOLD = text(
    """
    INSERT INTO sync_districts AS d (id, token_source, sync_state, lease_owner, lease_expires_at)
    VALUES (:id, :source, 'backfilling', :me, now() + make_interval(secs => :ttl))
    ON CONFLICT (id) DO UPDATE SET lease_owner = :me,
        lease_expires_at = now() + make_interval(secs => :ttl),
        token_source = COALESCE(d.token_source, EXCLUDED.token_source)
    WHERE d.lease_owner IS NULL OR d.lease_expires_at <= now() OR d.lease_owner = :me
    RETURNING id
    """
)
_LET_GO = text(
    """
    UPDATE sync_districts SET lease_owner = NULL, lease_expires_at = NULL
    WHERE id = :id AND lease_owner = :me
    """
)
_HELD = text("SELECT lease_owner FROM sync_districts WHERE id = :id AND lease_expires_at > now()")


async def backfilled(
    conn: AsyncConnection,
    me: str | None,
    district_id: str,
    event_id: str | None,
    created: datetime | None,
) -> bool:
    """A backfill ended: the cursor is the event id it read before its lists (None: the feed
    was empty, so polling starts from its beginning), the state `polling`. Fenced on `me`'s
    lease when `me` is given; False if `me` no longer holds it (nothing written)."""
    params = {"id": district_id, "me": me, "event_id": event_id, "created": created}
    if me is None:
        await ensure_district(conn, district_id, "polling")
        return (await conn.execute(_BACKFILLED_ANY, params)).first() is not None
    return (await conn.execute(_BACKFILLED_FENCED, params)).first() is not None


async def ensure_district(
    conn: AsyncConnection, district_id: str, state: str, token_source: str | None = None
) -> None:
    """The district's row exists, in `state` (unfenced: for a run that holds no lease)."""
    if state not in SYNC_STATES:
        raise ValueError(f"unknown sync state {state!r}")
    await conn.execute(_ENSURE, {"id": district_id, "state": state, "source": token_source})


async def hold_lease(
    conn: AsyncConnection, me: str, district_id: str, ttl: float, token_source: str | None
) -> bool:
    """Takes (free or expired) or renews `me`'s lease of one district for `ttl` seconds; False
    if another holder's lease is current."""
    params = {"id": district_id, "me": me, "ttl": ttl, "source": token_source}
    return (await conn.execute(_HOLD, params)).first() is not None


async def let_go(conn: AsyncConnection, me: str, district_id: str) -> None:
    """Gives up `me`'s lease of one district."""
    await conn.execute(_LET_GO, {"id": district_id, "me": me})


async def lease_holder(conn: AsyncConnection, district_id: str) -> str | None:
    """Who holds the district's lease now (None: nobody, or it expired)."""
    result: str | None = await conn.scalar(_HELD, {"id": district_id})
    return result
