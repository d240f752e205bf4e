"""`/v1/outbox/parked`: outbox rows the broker refused for good, and re-queueing one.

A row is parked by the relay (see `service/outbox/relay.py`) with the broker's error. Once the
cause is fixed (the topic's `max.message.bytes` raised, say), `POST .../{id}/retry` puts it back in
line: the next relay round publishes it, or parks it again with the new error.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from service.auth import AdminOnly
from service.db.uow import UnitOfWork
from service.deps import EngineDep
from service.outbox import store

router = APIRouter(prefix="/v1/outbox", tags=["outbox"], dependencies=[AdminOnly])


class ParkedRow(BaseModel):
    id: int
    topic: str
    key: str
    type: str
    district_id: str
    sequence: int
    written_at: str
    parked_at: str
    error: str


class ParkedList(BaseModel):
    items: list[ParkedRow]


class Requeued(BaseModel):
    id: int
    status: str


@router.get(
    "/parked",
    response_model=ParkedList,
    responses={401: {"description": "No valid admin token"}},
)
async def list_parked(engine: EngineDep, limit: int = 1000) -> ParkedList:
    async with engine.connect() as conn:
        rows = await store.list_parked(conn, max(1, min(limit, 10_000)))
    return ParkedList(
        items=[
            ParkedRow(
                id=r.id,
                topic=r.topic,
                key=r.key,
                type=r.type,
                district_id=r.district_id,
                sequence=r.sequence,
                written_at=r.written_at.isoformat(),
                parked_at=r.parked_at.isoformat(),
                error=r.error,
            )
            for r in rows
        ]
    )


@router.post(
    "/parked/{row_id}/retry",
    status_code=202,
    response_model=Requeued,
    responses={
        401: {"description": "No valid admin token"},
        404: {"description": "No parked row with this id"},
    },
)
async def retry_parked(row_id: int, engine: EngineDep) -> Requeued:
    async with UnitOfWork(engine) as uow:
        requeued = await store.requeue(uow.connection, row_id)
        await uow.commit()
    if not requeued:
        raise HTTPException(status_code=404, detail="no parked outbox row with this id")
    return Requeued(id=row_id, status="queued")
