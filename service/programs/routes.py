"""`/v1/programs`, `/v1/program-assignments` and `/v1/alerts` (admin bearer token)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from service.auth import AdminOnly
from service.db.uow import UnitOfWork
from service.deps import EngineDep
from service.iso import iso
from service.programs import alerts, assignments, store

router = APIRouter(prefix="/v1", tags=["programs"], dependencies=[AdminOnly])

_AUTH: dict[int | str, dict[str, Any]] = {401: {"description": "No valid admin token"}}


class Program(BaseModel):
    code: str
    name: str
    single_school: bool


class AssignmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program: str = Field(min_length=1, description="A code from GET /v1/programs")
    scope: Literal["district", "school", "section", "student"]
    scope_id: str = Field(min_length=1, max_length=64)


class AssignmentOut(BaseModel):
    id: str
    program: str
    scope: str
    scope_id: str
    created_at: str
    students_rechecked: int | None = Field(None, description="Students in the scope, re-checked")
    alert_changes: int | None = Field(None, description="Alerts opened, updated or resolved")


class AlertOut(BaseModel):
    id: str
    type: str
    district_id: str
    student_id: str
    school_ids: list[str]
    programs: list[str]
    status: Literal["open", "acknowledged", "resolved"]
    opened_at: str
    resolved_at: str | None
    acknowledged_at: str | None
    updated_at: str
    trigger_event_id: str
    suggested_school_id: str | None
    detail: dict[str, Any] = Field(description="Student, school names, program sources")


class AlertList(BaseModel):
    items: list[AlertOut]


class AlertEvent(BaseModel):
    action: Literal["opened", "updated", "acknowledged", "resolved"]
    at: str
    trigger_event_id: str
    school_ids: list[str]
    programs: list[str]


class AlertWithHistory(AlertOut):
    history: list[AlertEvent]


@router.get("/programs", response_model=list[Program], responses=_AUTH)
async def list_programs(engine: EngineDep) -> list[Program]:
    async with engine.connect() as conn:
        return [Program(**row) for row in await store.catalog_rows(conn)]


@router.post(
    "/program-assignments",
    response_model=AssignmentOut,
    status_code=201,
    responses={
        **_AUTH,
        200: {"description": "The same assignment existed already (idempotent)"},
        400: {"description": "Unknown program"},
    },
)
async def create_assignment(body: AssignmentIn, engine: EngineDep) -> Any:
    async with UnitOfWork(engine) as uow:
        try:
            result = await assignments.add_assignment(
                uow.connection, body.program, body.scope, body.scope_id
            )
        except assignments.UnknownProgram as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        await uow.commit()
    out = AssignmentOut(
        **result.assignment,
        students_rechecked=result.rechecked,
        alert_changes=len(result.decisions),
    )
    if not result.created:
        return JSONResponse(
            out.model_dump(exclude={"students_rechecked", "alert_changes"}), status_code=200
        )
    return out


@router.get("/program-assignments", response_model=list[AssignmentOut], responses=_AUTH)
async def get_assignments(engine: EngineDep) -> list[AssignmentOut]:
    async with engine.connect() as conn:
        return [AssignmentOut(**a) for a in await assignments.list_assignments(conn)]


@router.delete(
    "/program-assignments/{assignment_id}",
    status_code=204,
    responses={**_AUTH, 404: {"description": "Unknown assignment"}},
)
async def delete_assignment(assignment_id: str, engine: EngineDep) -> Response:
    async with UnitOfWork(engine) as uow:
        decisions = await assignments.remove_assignment(uow.connection, assignment_id)
        if decisions is None:
            raise HTTPException(status_code=404, detail="unknown assignment")
        await uow.commit()
    return Response(status_code=204)


def _alert(row: Any) -> AlertOut:
    return AlertOut(
        id=row.id,
        type=row.type,
        district_id=row.district_id,
        student_id=row.student_id,
        school_ids=list(row.school_ids),
        programs=[p["code"] for p in row.programs],
        status=row.status,
        opened_at=row.opened_at.isoformat(),
        resolved_at=iso(row.resolved_at),
        acknowledged_at=iso(row.acknowledged_at),
        updated_at=row.updated_at.isoformat(),
        trigger_event_id=row.trigger_event_id,
        suggested_school_id=row.suggested_school_id,
        detail=row.detail,
    )


@router.get("/alerts", response_model=AlertList, responses=_AUTH)
async def list_alerts(
    engine: EngineDep,
    status: Literal["open", "acknowledged", "resolved"] | None = None,
    district_id: str | None = None,
    student_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    """Newest first. Filters combine; `limit` bounds the page."""
    async with engine.connect() as conn:
        rows = await store.list_alerts(
            conn, status=status, district_id=district_id, student_id=student_id, limit=limit
        )
        return AlertList(items=[_alert(r) for r in rows])


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertWithHistory,
    responses={**_AUTH, 404: {"description": "Unknown alert"}},
)
async def get_alert(alert_id: str, engine: EngineDep) -> AlertWithHistory:
    """One alert with its history, oldest first."""
    async with engine.connect() as conn:
        row = await store.alert(conn, alert_id)
        if row is None:
            raise HTTPException(status_code=404, detail="unknown alert")
        events = [
            AlertEvent(
                action=h.action,
                at=h.at.isoformat(),
                trigger_event_id=h.trigger_event_id,
                school_ids=list(h.school_ids),
                programs=list(h.programs),
            )
            for h in await store.alert_history(conn, alert_id)
        ]
    return AlertWithHistory(**_alert(row).model_dump(), history=events)


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=AlertOut,
    responses={
        **_AUTH,
        404: {"description": "Unknown alert"},
        409: {"description": "The alert has resolved"},
    },
)
async def acknowledge_alert(alert_id: str, engine: EngineDep) -> AlertOut:
    async with UnitOfWork(engine) as uow:
        try:
            found = await assignments.acknowledge(uow.connection, alert_id)
        except alerts.AlertResolved as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        if found is None:
            raise HTTPException(status_code=404, detail="unknown alert")
        await uow.commit()
    async with engine.connect() as conn:
        row = await store.alert(conn, alert_id)
    assert row is not None  # acknowledged just now (alerts are never deleted)
    return _alert(row)
