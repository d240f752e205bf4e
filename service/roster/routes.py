"""`GET /v1/sections/{id}`: the roster as the consumer built it (a student: `service/students`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from sqlalchemy import select

from service.auth import AdminOnly
from service.db.tables import section_members, sections
from service.deps import EngineDep

router = APIRouter(prefix="/v1", tags=["roster"], dependencies=[AdminOnly])

_UNKNOWN: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid admin token"},
    404: {"description": "Unknown id"},
}


class SectionOut(BaseModel):
    id: str
    district_id: str
    school_id: str
    name: str | None
    student_ids: list[str]
    teacher_ids: list[str]
    deleted: bool
    last_modified: str


@router.get("/sections/{section_id}", response_model=SectionOut, responses=_UNKNOWN)
async def get_section(section_id: str, engine: EngineDep) -> SectionOut:
    async with engine.connect() as conn:
        row = (await conn.execute(select(sections).where(sections.c.id == section_id))).first()
        if row is None:
            raise HTTPException(status_code=404, detail="unknown section")
        members = (
            await conn.execute(
                select(section_members.c.role, section_members.c.user_id)
                .where(section_members.c.section_id == section_id)
                .order_by(section_members.c.user_id)
            )
        ).all()
    return SectionOut(
        id=row.id,
        district_id=row.district_id,
        school_id=row.school_id,
        name=row.name,
        student_ids=[m.user_id for m in members if m.role == "student"],
        teacher_ids=[m.user_id for m in members if m.role == "teacher"],
        deleted=row.deleted,
        last_modified=row.version_at.isoformat(),
    )
