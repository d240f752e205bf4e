"""`GET /v1/students/{id}`: a student as the consumer built the roster, with the programs they
hold. Its own feature, above both the roster and programs (it reads the one through the other's
rule), so the roster never imports programs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from sqlalchemy import select

from service.auth import AdminOnly
from service.db.tables import users
from service.deps import EngineDep
from service.programs import store as programs
from service.programs.check import load_world
from service.programs.rules import programs_of

# Tagged as the roster's reads, as it always was.
router = APIRouter(prefix="/v1", tags=["roster"], dependencies=[AdminOnly])

_UNKNOWN: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid admin token"},
    404: {"description": "Unknown id"},
}


class Name(BaseModel):
    first: str | None
    middle: str | None
    last: str | None


class Student(BaseModel):
    id: str
    district_id: str
    sis_id: str | None
    name: Name
    grade: str | None
    school_ids: list[str]
    primary_school_id: str | None
    section_ids: list[str]
    programs: list[str]
    deleted: bool
    last_modified: str


@router.get("/students/{student_id}", response_model=Student, responses=_UNKNOWN)
async def get_student(student_id: str, engine: EngineDep) -> Student:
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.id == student_id))).first()
        if row is None or "student" not in row.roles:
            raise HTTPException(status_code=404, detail="unknown student")
        # The same facts and rule the single-school check uses (service/programs).
        facts = (await load_world(conn, {student_id}, set(), set(), set())).facts(student_id)
        scope_ids = {student_id, row.district_id, *facts.section_ids, *facts.school_ids}
        held = programs_of(facts, await programs.assignments_for(conn, scope_ids))
    return Student(
        id=row.id,
        district_id=row.district_id,
        sis_id=row.sis_id,
        name=Name(first=row.name_first, middle=row.name_middle, last=row.name_last),
        grade=row.grade,
        school_ids=sorted(facts.school_ids),
        primary_school_id=row.primary_school_id,
        section_ids=sorted(facts.section_ids),
        programs=sorted(held),
        deleted=row.deleted,
        last_modified=row.version_at.isoformat(),
    )
