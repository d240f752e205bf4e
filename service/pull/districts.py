"""`GET /v1/districts` (admin bearer token): every district the service knows and how its sync
stands, from `sync_districts` (and the roster's `districts` row for its name)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.auth import AdminOnly
from service.deps import EngineDep
from service.iso import iso
from service.pull import store
from service.pull.store import SyncDistrict

router = APIRouter(prefix="/v1", tags=["pull"], dependencies=[AdminOnly])


class DistrictSync(BaseModel):
    id: str
    name: str | None = Field(description="The district's name in the roster (None until known)")
    sync_state: Literal["backfilling", "polling", "token_invalid", "no_token"]
    cursor_event_id: str | None = Field(description="The last event id whose page Kafka holds")
    last_polled_at: str | None
    last_event_at: str | None = Field(description="When the poller last pulled an event")
    token_source: Literal["discovered", "manual"] | None
    last_error: str | None
    last_drained_at: str | None = Field(description="When the feed was last read to its end")
    polled_by: str | None = Field(description="The poller holding the district's lease now")


class Districts(BaseModel):
    items: list[DistrictSync]


def _item(row: SyncDistrict, lease_current: bool) -> DistrictSync:
    return DistrictSync(
        id=row.id,
        name=row.name,
        sync_state=row.sync_state,
        cursor_event_id=row.cursor_event_id,
        last_polled_at=iso(row.last_polled_at),
        last_event_at=iso(row.last_event_at),
        token_source=row.token_source,
        last_error=row.last_error,
        last_drained_at=iso(row.last_drained_at),
        polled_by=row.lease_owner if lease_current else None,
    )


@router.get(
    "/districts",
    response_model=Districts,
    responses={401: {"description": "No valid admin token"}},
)
async def list_districts(engine: EngineDep) -> Districts:
    async with engine.connect() as connection:
        rows = await store.list_districts(connection)
        now = await store.database_now(connection)
    return Districts(
        items=[_item(r, r.lease_expires_at is not None and r.lease_expires_at > now) for r in rows]
    )
