"""`POST /v1/districts/{id}/backfill` and `GET /v1/backfills/{id}` (admin bearer token).

The API only records the request (a `running` row of `backfills`): the poller holding the
district's lease runs it (service/pull/backfill.py), never the API process. One backfill runs per
district at a time: a request while one runs is a 409 naming the running one (the partial unique
index decides, so two concurrent requests cannot both be accepted).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from service.auth import AdminOnly
from service.db.uow import UnitOfWork
from service.deps import EngineDep, SettingsDep
from service.pull import backfills

router = APIRouter(prefix="/v1", tags=["pull"], dependencies=[AdminOnly])


class BackfillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    archive_missing: bool = Field(
        True, description="Archive the records the sync no longer returns (under the guard)"
    )
    force: bool = Field(False, description="Archive even past ROSTER_BACKFILL_MAX_ARCHIVE_SHARE")


class KindCounts(BaseModel):
    read: int
    published: int
    invalid: int = Field(0, description="Records that failed validation (not published)")


class BackfillOut(BaseModel):
    id: str
    district_id: str
    status: Literal["running", "succeeded", "failed", "guarded"]
    reason: Literal["api", "cli", "first_contact", "cursor_refused"]
    archive_missing: bool
    force: bool
    requested_at: str | None
    started_at: str | None = Field(description="When a runner first started it")
    finished_at: str | None
    heartbeat_at: str | None
    start_event_id: str | None = Field(description="The newest event id read before the lists")
    counts: dict[str, KindCounts]
    missing: dict[str, int]
    archived: dict[str, int]
    error: str | None


_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid admin token"},
    404: {"description": "The district has no token (no sync is possible)"},
    409: {"description": "A backfill already runs for the district (named in the body)"},
}


@router.post(
    "/districts/{district_id}/backfill",
    status_code=202,
    response_model=BackfillOut,
    responses=_RESPONSES,
)
async def request_backfill(
    district_id: str,
    engine: EngineDep,
    settings: SettingsDep,
    body: BackfillIn | None = None,
) -> Any:
    wanted = body or BackfillIn()
    async with UnitOfWork(engine) as uow:
        conn = uow.connection
        if not await backfills.has_token(conn, settings, district_id):
            raise HTTPException(status_code=404, detail="no token is known for this district")
        row = await backfills.insert(
            conn,
            district_id,
            reason="api",
            archive_missing=wanted.archive_missing,
            force=wanted.force,
        )
        if row is None:
            running = await backfills.running(conn, district_id)
            return JSONResponse(
                status_code=409,
                content={
                    "detail": "a backfill is already running for this district",
                    "backfill": None if running is None else backfills.as_json(running),
                },
            )
        await uow.commit()
    return backfills.as_json(row)


@router.get(
    "/backfills/{backfill_id}",
    response_model=BackfillOut,
    responses={401: _RESPONSES[401], 404: {"description": "Unknown id"}},
)
async def get_backfill(backfill_id: str, engine: EngineDep) -> Any:
    async with engine.connect() as conn:
        row = await backfills.get(conn, backfill_id)
    if row is None:
        raise HTTPException(status_code=404, detail="unknown backfill")
    return backfills.as_json(row)
