"""A generated district's event stream, and an oracle of the roster it must produce."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tests.support.factory import BASE_TIME, Factory


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@dataclass
class District:
    id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    schools: list[str] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)


def generate(
    factory: Factory,
    *,
    schools: int = 3,
    students: int = 24,
    teachers: int = 4,
    sections: int = 6,
    changes: int = 80,
) -> District:
    """Creates, then changes: section moves, grade changes, deletes, stale out-of-order copies
    and duplicate deliveries (the same event id again)."""
    rng = factory.rng
    d = District(factory.oid())
    clock: dict[str, datetime] = {}
    latest: dict[str, dict[str, Any]] = {}

    def emit(kind: str, obj: dict[str, Any], action: str, at: datetime) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["last_modified"] = _stamp(at)
        event = {
            "id": factory.oid(),
            "type": f"{kind}.{action}",
            "created": _stamp(at),
            "data": {"object": obj},
        }
        d.events.append(event)
        return event

    def touch(kind: str, obj: dict[str, Any], action: str = "updated") -> None:
        at = clock.get(obj["id"], BASE_TIME) + timedelta(seconds=rng.randint(1, 30))
        clock[obj["id"]] = at
        latest[obj["id"]] = emit(kind, obj, action, at)

    district = factory.obj("districts", d.id)
    touch("districts", district, "created")
    for _ in range(schools):
        school = factory.obj("schools", d.id)
        d.schools.append(school["id"])
        touch("schools", school, "created")
    users: dict[str, dict[str, Any]] = {}
    for _ in range(students):
        user = factory.obj("users", d.id)
        home = rng.choice(d.schools)
        user["roles"]["student"].update(school=home, schools=[home], enrollments=[])
        users[user["id"]] = user
        d.students.append(user["id"])
        touch("users", user, "created")
    teacher_ids = []
    for _ in range(teachers):
        teacher = factory.obj("users", d.id)
        teacher["roles"] = {"teacher": {"school": d.schools[0], "schools": d.schools[:1]}}
        teacher_ids.append(teacher["id"])
        touch("users", teacher, "created")
    section_objs: dict[str, dict[str, Any]] = {}
    for _ in range(sections):
        section = factory.obj("sections", d.id)
        section.update(
            school=rng.choice(d.schools),
            teacher=rng.choice(teacher_ids),
            teachers=[rng.choice(teacher_ids)],
            students=rng.sample(d.students, k=min(6, len(d.students))),
        )
        section_objs[section["id"]] = section
        d.sections.append(section["id"])
        touch("sections", section, "created")

    for _ in range(changes):
        roll = rng.random()
        if roll < 0.45:
            sid = rng.choice(d.sections)
            section = section_objs[sid]
            n = len(d.students)
            section["students"] = rng.sample(d.students, k=rng.randint(min(2, n), min(8, n)))
            touch("sections", section)
        elif roll < 0.6:
            uid = rng.choice(d.students)
            users[uid]["roles"]["student"]["grade"] = str(rng.randint(1, 8))
            touch("users", users[uid])
        elif roll < 0.7:
            # A stale copy: an older version of a record arriving after a newer one.
            rid = rng.choice(list(latest))
            old = copy.deepcopy(latest[rid])
            older = clock[rid] - timedelta(seconds=rng.randint(31, 300))
            old["id"] = factory.oid()
            old["data"]["object"]["last_modified"] = _stamp(older)
            old["type"] = old["type"].split(".")[0] + ".updated"
            d.events.append(old)
        elif roll < 0.85:
            d.events.append(copy.deepcopy(rng.choice(d.events)))  # the same event again
        elif roll < 0.93:
            sid = rng.choice(d.sections)
            touch("sections", section_objs[sid], "deleted")
        else:
            uid = rng.choice(d.students)
            touch("users", users[uid], "deleted")
    return d


@dataclass
class Expected:
    records: dict[tuple[str, str], tuple[str, bool]]  # (kind, id) -> (winning event id, deleted)
    members: set[tuple[str, str, str]]  # (section, role, user)
    outcomes: dict[str, str]  # event id -> applied | stale
    student_schools: dict[str, list[str]]
    student_sections: dict[str, list[str]]


def _time(stamp: str) -> str:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).isoformat()


def _version(event: dict[str, Any]) -> tuple[str, str, bool, str]:
    obj = event["data"]["object"]
    at = obj.get("last_modified") or event["created"]
    return (
        _time(at),
        _time(event["created"]),
        event["type"].endswith(".deleted"),
        event["id"],
    )


def oracle(events: list[dict[str, Any]]) -> Expected:
    """Applies the stream in order, in memory: newest version of each record wins."""
    winner: dict[tuple[str, str], dict[str, Any]] = {}
    outcomes: dict[str, str] = {}
    for event in events:
        if event["id"] in outcomes:
            continue
        key = (event["type"].split(".")[0], event["data"]["object"]["id"])
        if key not in winner or _version(event) > _version(winner[key]):
            winner[key] = event
            outcomes[event["id"]] = "applied"
        else:
            outcomes[event["id"]] = "stale"
    records = {k: (e["id"], e["type"].endswith(".deleted")) for k, e in winner.items()}
    members: set[tuple[str, str, str]] = set()
    live_section_school: dict[str, str] = {}
    for (kind, rid), event in winner.items():
        if kind != "sections":
            continue
        obj = event["data"]["object"]
        teachers = set(obj.get("teachers", [])) | (
            {obj["teacher"]} if obj.get("teacher") else set()
        )
        members |= {(rid, "student", s) for s in obj.get("students", [])}
        members |= {(rid, "teacher", t) for t in teachers}
        if not event["type"].endswith(".deleted"):
            live_section_school[rid] = obj["school"]
    schools: dict[str, set[str]] = {}
    sections_of: dict[str, set[str]] = {}
    for (kind, rid), event in winner.items():
        student = (
            event["data"]["object"].get("roles", {}).get("student") if kind == "users" else None
        )
        if student is not None:
            schools.setdefault(rid, set()).update(student.get("schools", []))
    for section, role, user in members:
        if role == "student" and section in live_section_school:
            schools.setdefault(user, set()).add(live_section_school[section])
            sections_of.setdefault(user, set()).add(section)
    return Expected(
        records,
        members,
        outcomes,
        {k: sorted(v) for k, v in schools.items()},
        {k: sorted(v) for k, v in sections_of.items()},
    )
