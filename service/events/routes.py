"""`GET /v1/events/{event_id}`: an event's status from the event log."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from service.auth import AdminOnly
from service.deps import EngineDep
from service.events import store as events
from service.iso import iso

router = APIRouter(prefix="/v1", tags=["events"], dependencies=[AdminOnly])


class EventStatus(BaseModel):
    event_id: str
    type: str
    district_id: str
    source: str
    status: str
    received_at: str
    applied_at: str | None
    error: str | None


@router.get(
    "/events/{event_id}",
    response_model=EventStatus,
    responses={401: {"description": "No valid admin token"}, 404: {"description": "Never seen"}},
)
async def get_event(event_id: str, engine: EngineDep) -> EventStatus:
    async with engine.connect() as connection:
        row = await events.find(connection, event_id)
    if row is None:
        raise HTTPException(status_code=404, detail="event id never seen")
    return EventStatus(
        event_id=row["event_id"],
        type=row["type"],
        district_id=row["district_id"],
        source=row["source"],
        status=row["status"],
        received_at=row["received_at"].isoformat(),
        applied_at=iso(row["applied_at"]),
        error=row["error"],
    )
