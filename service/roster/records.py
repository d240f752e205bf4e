"""What an event writes: its record row, its memberships, and its version (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from schemas.clever import AnyEvent, School, Section, User
from service.roster.rules import RecordKey, Version


def version_of(event: AnyEvent) -> Version:
    """The object's `last_modified` (else the event's `created`), then the event's `created`; a
    delete is a tombstone."""
    created = event.created
    at = event.data.object.last_modified or created
    return Version(at, created, event.type.endswith(".deleted"), event.id)


def record_key(event: AnyEvent) -> RecordKey:
    return (event.type.partition(".")[0], event.data.object.id)


# `type(obj) is X` rather than isinstance: pydantic's model metaclass is an ABCMeta, whose
# isinstance checks cost several percent of the consumer's time on these hot paths.


def record_row(event: AnyEvent, event_json: str) -> dict[str, Any]:
    """The row of the record's table: typed columns, the version, the tombstone, and in `data`
    the event's JSON as received (the store keeps its object, with every field Clever sent)."""
    obj = event.data.object
    version = version_of(event)
    row: dict[str, Any] = {
        "id": obj.id,
        "district_id": obj.district_id,
        "data": event_json,
        "deleted": version.delete,
        "version_at": version.at,
        "version_created": version.created,
        "version_delete": version.delete,
        "version_event": version.event_id,
    }
    if type(obj) is User:
        student = obj.roles.student
        row |= {
            "sis_id": student.sis_id if student else None,
            "name_first": obj.name.first,
            "name_middle": obj.name.middle,
            "name_last": obj.name.last,
            "grade": student.grade if student else None,
            "primary_school_id": student.school if student else None,
            "roles": sorted(
                role
                for role in ("student", "teacher", "staff", "district_admin", "contact")
                if getattr(obj.roles, role) is not None
            ),
        }
    elif type(obj) is Section:
        row |= {"school_id": obj.school, "name": obj.name}
    elif type(obj) is School:
        row["name"] = obj.name
    return row


def section_members(section: Section) -> list[tuple[str, str]]:
    """(role, user id) of a section's full current lists; the primary teacher counts too."""
    teachers = set(section.teachers) | ({section.teacher} if section.teacher else set())
    return sorted({("student", s) for s in section.students} | {("teacher", t) for t in teachers})


def user_school_links(user: User) -> list[tuple[str, str]]:
    """(role, school id) for the `schools` lists of a user's roles (the contract counts those,
    not the derived primary `school`, which Clever lists among them anyway)."""
    links: set[tuple[str, str]] = set()
    roles = user.roles
    if roles.student is not None:
        links |= {("student", s) for s in roles.student.schools}
    if roles.teacher is not None:
        links |= {("teacher", s) for s in roles.teacher.schools}
    if roles.staff is not None:
        links |= {("staff", s) for s in roles.staff.schools}
    return sorted(links)
