"""`roster.alerts.v1`: the single-school rule's alerts, one CloudEvent per transition (wire
contract). Key: the student id. Types: `alert.opened`, `alert.updated`, `alert.acknowledged`,
`alert.resolved`. `data` is the alert as it stands after the transition, with enough to fix the
roster at its source: the student, each school with its name, each program with the assignments
it comes from, and Clever's primary school as the one suggested to keep.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.topics import ALERTS_TOPIC as ALERTS_TOPIC  # this contract's topic

ALERTS_SOURCE = "/roster-sync/alerts"
ALERT_TYPE = "multi_school_enrollment"
AlertStatus = Literal["open", "acknowledged", "resolved"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlertStudent(_Model):
    id: str
    sis_id: str | None
    name: dict[str, str | None] = Field(description="first, middle, last")
    primary_school_id: str | None = Field(description="Clever's primary school")


class AlertSchool(_Model):
    id: str
    name: str | None = Field(description="null while the school record has not arrived")


class ProgramSource(_Model):
    assignment_id: str
    scope: Literal["district", "school", "section", "student"]
    scope_id: str


class AlertProgram(_Model):
    code: str
    name: str
    sources: list[ProgramSource] = Field(description="The assignments that grant it")


class Alert(_Model):
    """The data of every `roster.alerts.v1` message."""

    id: str
    type: Literal["multi_school_enrollment"]
    status: AlertStatus
    district_id: str
    student: AlertStudent
    schools: list[AlertSchool]
    programs: list[AlertProgram] = Field(description="The single-school programs held")
    suggested_school_id: str | None = Field(
        description="Clever's primary school, when it is one of the schools: the one to keep"
    )
    opened_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    trigger_event_id: str = Field(
        description="The Clever event id, or `assignment:<id>` for a program assignment change"
    )
    source_event_id: str = Field(description="The same as trigger_event_id (for tracing)")
    sequence: int = Field(ge=1, description="Per student (message key): 1, 2, 3, …")


ALERT_MESSAGE_TYPES: dict[str, type[Alert]] = {
    "alert.opened": Alert,
    "alert.updated": Alert,
    "alert.acknowledged": Alert,
    "alert.resolved": Alert,
}
