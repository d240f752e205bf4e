"""The downstream messages a roster write produces (pure: no broker, no database)."""

from __future__ import annotations

from typing import Any

from schemas.clever import EVENT_ADAPTER
from schemas.roster_changes import CHANGE_TYPES
from service.outbox.store import Outgoing
from service.roster.changes import record_changes
from tests.support.factory import Factory


def _event(factory: Factory, event_type: str, **changes: Any) -> Any:
    raw = factory.event(event_type, factory.oid())
    raw["data"]["object"].update(changes)
    return EVENT_ADAPTER.validate_python(raw)


def _valid(messages: list[Outgoing]) -> None:
    for m in messages:
        CHANGE_TYPES[m.type].model_validate(m.data | {"sequence": 1})  # extra="forbid"
        assert m.key == m.data["id"]


def test_every_kind_of_change_matches_its_published_model() -> None:
    factory = Factory(seed=1)
    student = _event(factory, "users.updated")
    out = record_changes(student)
    assert [m.type for m in out] == ["roster.student.upserted"]
    _valid(out)
    both = _event(
        factory,
        "users.deleted",
        roles={"teacher": {"schools": [factory.oid()], "title": "Ms"}, "student": {}},
    )
    out = record_changes(both)
    assert [m.type for m in out] == ["roster.student.deleted", "roster.teacher.deleted"]
    _valid(out)
    school = record_changes(_event(factory, "schools.created"))
    assert [m.type for m in school] == ["roster.school.upserted"]
    _valid(school)
    for kind in ("districts", "courses", "terms", "resources"):
        assert record_changes(_event(factory, f"{kind}.updated")) == []


def test_section_changes_carry_enrollment_differences() -> None:
    factory = Factory(seed=2)
    a, b, c = factory.oid(), factory.oid(), factory.oid()
    section = _event(factory, "sections.updated", students=[b, c])
    out = record_changes(section, previous_students=[a, b])
    _valid(out)
    assert [(m.type, m.data.get("student_id")) for m in out] == [
        ("roster.section.upserted", None),
        ("roster.enrollment.added", c),
        ("roster.enrollment.removed", a),
    ]
    obj = section.data.object
    assert out[1].key == f"{obj.id}:{c}" and out[1].data["school_id"] == obj.school
    assert out[0].data["student_ids"] == sorted([b, c])

    # A deleted section removes everyone it had; nothing is added.
    deleted = _event(factory, "sections.deleted", students=[b, c])
    out = record_changes(deleted, previous_students=[b, c])
    assert [m.type for m in out] == ["roster.section.deleted"] + ["roster.enrollment.removed"] * 2
    # No change of students: the section alone.
    same = record_changes(_event(factory, "sections.updated", students=[a]), previous_students=[a])
    assert [m.type for m in same] == ["roster.section.upserted"]
