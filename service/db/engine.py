"""The async SQLAlchemy engine (asyncpg driver) for the configured database."""

from __future__ import annotations

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.settings import Settings, missing


def normalise_url(url: str) -> str:
    """Accepts plain `postgresql://` URLs and selects the asyncpg driver."""
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url.removeprefix("postgresql://")
    return url


def database_url(settings: Settings) -> str:
    """`ROSTER_DATABASE_URL`; unset, a `SettingsError` naming it (no fallback to the embedded
    server: `roster dev` passes its URL explicitly, and a deployment that forgot it must stop at
    start-up, not fail later on a socket under `.local/`)."""
    if not settings.database_url:
        raise missing("database_url")
    return normalise_url(settings.database_url)


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    """`pre_ping` checks each connection with a round trip as it leaves the pool, so a server
    restart is never seen by a query. Without it, the first statement on a dead connection
    fails, and the pool then drops every connection older than that failure: a caller that
    retries anyway (the webhook door answers 503) can save the round trip."""
    return create_async_engine(
        normalise_url(url),
        # JSONB values (whole Clever objects, thousands per batch) with orjson, not json.
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
    )
