"""The single-school rule's alerts as data (pure: no I/O).

From the rule's steps (`rules.replay`) or an operator's acknowledgement, these build what is
written: each alert's row, its history rows and its `roster.alerts.v1` messages. The message data
is the alert as it stands after the transition, following `schemas/roster_alerts.Alert` minus
`sequence` (the outbox numbers it per student); the row stores the same data as `detail`, so the
next transition of a still unresolved alert starts from it.

- An opened alert starts `open`; an update keeps the status it had (an acknowledged alert stays
  acknowledged); a resolve makes it `resolved` with `resolved_at`.
- Acknowledging (`Action.ACKNOWLEDGE`) changes only the status and `acknowledged_at`.
- A batch can open, update and resolve one alert: each step starts from the previous step's data,
  and the row is written once, as it ends up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.roster_alerts import ALERT_TYPE, ALERTS_TOPIC
from service.outbox.store import Outgoing
from service.programs.rules import Action, Catalog, Conflict, Person, Step


@dataclass(frozen=True)
class AlertRow:
    """An `alerts` row to insert (`new`) or update, as a batch leaves it."""

    id: str
    new: bool
    type: str
    district_id: str
    student_id: str
    status: str
    school_ids: list[str]
    programs: list[dict[str, Any]]
    detail: dict[str, Any]  # the data of its last message
    suggested_school_id: str | None
    at: datetime
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    trigger_event_id: str


@dataclass(frozen=True)
class HistoryRow:
    """One `alert_history` row: a transition of an alert."""

    alert_id: str
    action: Action
    at: datetime
    trigger_event_id: str
    school_ids: list[str]
    programs: list[str]  # program codes


@dataclass(frozen=True)
class AlertWrites:
    """What the steps of one check write: rows in the order their alerts first appear."""

    updates: list[AlertRow]
    inserts: list[AlertRow]
    history: list[HistoryRow]
    messages: list[Outgoing]


def message(student_id: str, action: Action, district_id: str, data: dict[str, Any]) -> Outgoing:
    """The `roster.alerts.v1` message of one transition, keyed by the student."""
    return Outgoing(ALERTS_TOPIC, student_id, f"alert.{action.value}", district_id, data)


def programs_json(conflict: Conflict, catalog: Catalog) -> list[dict[str, Any]]:
    """The single-school programs held, each with its name and the assignments granting it."""
    return [
        {
            "code": code,
            "name": catalog.names.get(code, code),
            "sources": [
                {"assignment_id": a.id, "scope": a.scope, "scope_id": a.scope_id} for a in sources
            ],
        }
        for code, sources in conflict.programs
    ]


def alert_writes(
    steps: Sequence[Step],
    people: Mapping[str, Person],
    catalog: Catalog,
    details: Mapping[str, dict[str, Any]],
    school_names: Mapping[str, str | None],
    now: datetime,
    new_id: Callable[[], str],
) -> AlertWrites:
    """The rows and messages of the rule's steps.

    `people` are the students as the replay left them; `details` the stored data of their
    unresolved alerts by alert id; `school_names` the names known (a school whose record has not
    arrived is named None); `new_id` gives the id of each alert a step opens (`new:<n>`).
    """
    ids = {s.alert: (new_id() if s.alert.startswith("new:") else s.alert) for s in steps}
    state: dict[str, dict[str, Any]] = {}  # alert id -> its data as the steps go
    final: dict[str, AlertRow] = {}  # alert id -> the row to write
    history: list[HistoryRow] = []
    messages: list[Outgoing] = []
    for step in steps:
        alert_id = ids[step.alert]
        person = people.get(step.student_id) or Person(known=False)
        data = (
            state.get(alert_id)
            or details.get(alert_id)
            or {
                "id": alert_id,
                "type": ALERT_TYPE,
                "status": "open",
                "district_id": person.district_id or "",
                "opened_at": now.isoformat(),
                "acknowledged_at": None,
                "resolved_at": None,
            }
        )
        data = dict(data)
        if step.action is Action.RESOLVE:
            data |= {"status": "resolved", "resolved_at": now.isoformat()}
        conflict = step.conflict
        primary = person.primary_school_id
        first, middle, last = person.name
        data |= {
            "student": {
                "id": step.student_id,
                "sis_id": person.sis_id,
                "name": {"first": first, "middle": middle, "last": last},
                "primary_school_id": primary,
            },
            "schools": [{"id": s, "name": school_names.get(s)} for s in conflict.school_ids],
            "programs": programs_json(conflict, catalog),
            "suggested_school_id": primary if primary in conflict.school_ids else None,
            "trigger_event_id": step.trigger,
            "source_event_id": step.trigger,
        }
        state[alert_id] = data
        final[alert_id] = AlertRow(
            id=alert_id,
            new=step.alert.startswith("new:"),
            type=ALERT_TYPE,
            district_id=data["district_id"],
            student_id=step.student_id,
            status=data["status"],
            school_ids=list(conflict.school_ids),
            programs=data["programs"],
            detail=data,
            suggested_school_id=data["suggested_school_id"],
            at=now,
            resolved_at=now if data["status"] == "resolved" else None,
            acknowledged_at=None,
            trigger_event_id=step.trigger,
        )
        history.append(
            HistoryRow(
                alert_id=alert_id,
                action=step.action,
                at=now,
                trigger_event_id=step.trigger,
                school_ids=list(conflict.school_ids),
                programs=conflict.program_codes,
            )
        )
        messages.append(message(step.student_id, step.action, data["district_id"], data))
    return AlertWrites(
        updates=[r for r in final.values() if not r.new],
        inserts=[r for r in final.values() if r.new],
        history=history,
        messages=messages,
    )


@dataclass(frozen=True)
class StoredAlert:
    """What acknowledging reads of a stored alert."""

    id: str
    student_id: str
    district_id: str
    status: str
    detail: dict[str, Any]
    school_ids: list[str]
    trigger_event_id: str


@dataclass(frozen=True)
class Acknowledgement:
    detail: dict[str, Any]  # the alert's data now, its message's data
    history: HistoryRow
    message: Outgoing


class AlertResolved(ValueError):
    """A resolved alert cannot be acknowledged."""


def acknowledgement(alert: StoredAlert, now: datetime) -> Acknowledgement | None:
    """An operator acknowledges an open alert: its status and `acknowledged_at` change, nothing
    else (the trigger stays the one of its last transition). None if it is acknowledged already
    (acknowledging is idempotent); AlertResolved if it has resolved."""
    if alert.status == "resolved":
        raise AlertResolved(f"alert {alert.id} is resolved")
    if alert.status == "acknowledged":
        return None
    detail = dict(alert.detail) | {"status": "acknowledged", "acknowledged_at": now.isoformat()}
    history = HistoryRow(
        alert_id=alert.id,
        action=Action.ACKNOWLEDGE,
        at=now,
        trigger_event_id=alert.trigger_event_id,
        school_ids=list(alert.school_ids),
        programs=[p["code"] for p in detail["programs"]],
    )
    return Acknowledgement(
        detail, history, message(alert.student_id, Action.ACKNOWLEDGE, alert.district_id, detail)
    )
