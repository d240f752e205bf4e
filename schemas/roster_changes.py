"""`roster.changes.v1`: what downstream products receive, one CloudEvent per change (wire contract).

Kafka binary mode: the CloudEvents attributes travel as `ce_*` headers, the value is the `data`
below as JSON, the key is the entity id. `data` is our normalised record, not Clever's shape.
Every message carries the Clever event that caused it (`source_event_id`, for tracing) and a
per-entity `sequence` (1, 2, 3, … per key, also the `sequence` extension attribute): a consumer
keeps the highest it has seen per key and drops anything not above it, which discards both
out-of-order copies and the rare duplicate a relay crash can cause.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.topics import CHANGES_TOPIC as CHANGES_TOPIC  # this contract's topic

CHANGES_SOURCE = "/roster-sync/changes"


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    district_id: str
    source_event_id: str = Field(description="The Clever event this change came from.")
    sequence: int = Field(ge=1, description="Per entity (message key): 1, 2, 3, …")


class Name(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    first: str | None = None
    middle: str | None = None
    last: str | None = None


class Person(Message):
    id: str
    sis_id: str | None
    name: Name
    school_ids: list[str] = Field(description="Schools the role lists in Clever, sorted.")
    deleted: bool
    last_modified: datetime


class Student(Person):
    """`roster.student.upserted` / `roster.student.deleted` (the record as it last was)."""

    grade: str | None
    primary_school_id: str | None


class Teacher(Person):
    """`roster.teacher.upserted` / `roster.teacher.deleted`."""

    title: str | None


class Section(Message):
    """`roster.section.upserted` / `roster.section.deleted`."""

    id: str
    school_id: str
    name: str | None
    student_ids: list[str]
    teacher_ids: list[str]
    deleted: bool
    last_modified: datetime


class School(Message):
    """`roster.school.upserted` / `roster.school.deleted`."""

    id: str
    name: str | None
    sis_id: str | None
    deleted: bool
    last_modified: datetime


class Enrollment(Message):
    """`roster.enrollment.added` / `roster.enrollment.removed`: a student joined or left a
    section (a section's deletion removes all its students; its return adds them back). The id,
    and the message key, is `<section id>:<student id>`."""

    id: str
    section_id: str
    student_id: str
    school_id: str
    action: Literal["added", "removed"]


CHANGE_TYPES: dict[str, type[Message]] = {
    "roster.student.upserted": Student,
    "roster.student.deleted": Student,
    "roster.teacher.upserted": Teacher,
    "roster.teacher.deleted": Teacher,
    "roster.section.upserted": Section,
    "roster.section.deleted": Section,
    "roster.school.upserted": School,
    "roster.school.deleted": School,
    "roster.enrollment.added": Enrollment,
    "roster.enrollment.removed": Enrollment,
}
