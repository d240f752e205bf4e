"""What a committed roster write tells downstream products: the `roster.changes.v1` messages.

Pure (no I/O). The consumer calls these for every record write the rules decided on (never for a
stale or replayed event, nor for a write that leaves its record exactly as stored, so those
publish nothing) and appends the result to the outbox in the same transaction. The dictionaries
follow the models in `schemas/roster_changes.py` minus `sequence`, which the outbox numbers per
key when it stores them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.clever import AnyEvent, School, Section, User
from schemas.roster_changes import CHANGES_TOPIC
from service.outbox.store import Outgoing
from service.roster.records import section_members, version_of

# The user roles that publish downstream messages (`roster.student.*`, `roster.teacher.*`).
PUBLISHED_ROLES = ("student", "teacher")


def _change(kind: str, deleted: bool, district_id: str, data: dict[str, Any]) -> Outgoing:
    action = "deleted" if deleted else "upserted"
    return Outgoing(CHANGES_TOPIC, data["id"], f"roster.{kind}.{action}", district_id, data)


def record_changes(
    event: AnyEvent, previous_students: Iterable[str] = (), previous_user: User | None = None
) -> list[Outgoing]:
    """The messages for one applied write of `event`'s record.

    `previous_students` are the students the section had before this write, counting none if it
    was missing or deleted; enrollments are the difference with its students after the write
    (none once it is deleted). Users give a student and/or a teacher message, by their roles;
    a role the stored, live `previous_user` held and this write drops gives that role's
    `deleted` message, as the role last was (downstream keeps no student who no longer is one).
    Other record kinds (districts, courses, terms, resources) publish nothing downstream.
    """
    obj = event.data.object
    version = version_of(event)
    base = {
        "district_id": obj.district_id,
        "source_event_id": event.id,
        "deleted": version.delete,
        "last_modified": version.at.isoformat(),
    }
    if type(obj) is User:
        changes = _user_changes(obj, base, version.delete)
        if previous_user is not None and not version.delete:
            kept = {c.type for c in changes}
            changes += [
                c
                for c in _user_changes(previous_user, base | {"deleted": True}, True)
                if c.type.replace(".deleted", ".upserted") not in kept
            ]
        return changes
    if type(obj) is Section:
        members = section_members(obj)
        section = _change(
            "section",
            version.delete,
            obj.district_id,
            base
            | {
                "id": obj.id,
                "school_id": obj.school,
                "name": obj.name,
                "student_ids": [u for role, u in members if role == "student"],
                "teacher_ids": [u for role, u in members if role == "teacher"],
            },
        )
        now = set() if version.delete else set(obj.students)
        return [section, *enrollment_changes(event, obj, set(previous_students), now)]
    if type(obj) is School:
        data = base | {"id": obj.id, "name": obj.name, "sis_id": obj.sis_id}
        return [_change("school", version.delete, obj.district_id, data)]
    return []


def _user_changes(user: User, base: dict[str, Any], deleted: bool) -> list[Outgoing]:
    person = base | {
        "id": user.id,
        "name": {"first": user.name.first, "middle": user.name.middle, "last": user.name.last},
    }
    out: list[Outgoing] = []
    student, teacher = user.roles.student, user.roles.teacher
    if student is not None:
        data = person | {
            "sis_id": student.sis_id,
            "school_ids": sorted(set(student.schools)),
            "grade": student.grade,
            "primary_school_id": student.school,
        }
        out.append(_change("student", deleted, user.district_id, data))
    if teacher is not None:
        data = person | {
            "sis_id": teacher.sis_id,
            "school_ids": sorted(set(teacher.schools)),
            "title": teacher.title,
        }
        out.append(_change("teacher", deleted, user.district_id, data))
    return out


def enrollment_changes(
    event: AnyEvent, section: Section, before: set[str], after: set[str]
) -> list[Outgoing]:
    """`added` for students now in the section and not before, `removed` for the reverse."""
    out = []
    for action, students in (("added", after - before), ("removed", before - after)):
        for student_id in sorted(students):
            key = f"{section.id}:{student_id}"
            data = {
                "id": key,
                "district_id": section.district_id,
                "source_event_id": event.id,
                "section_id": section.id,
                "student_id": student_id,
                "school_id": section.school,
                "action": action,
            }
            out.append(
                Outgoing(
                    CHANGES_TOPIC, key, f"roster.enrollment.{action}", section.district_id, data
                )
            )
    return out
