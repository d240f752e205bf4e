"""Clever events as the single-school rule's changes (`rules.Change`), pure. Not the event log
(`service/events/`), nor the downstream change messages (`service/roster/changes.py`)."""

from __future__ import annotations

from schemas.clever import AnyEvent, District, School, Section, User
from service.programs.rules import (
    Change,
    FlagChange,
    Person,
    SectionChange,
    SectionState,
    UserChange,
)
from service.roster.records import version_of


def change_of(event: AnyEvent) -> Change | None:
    """What an applied event changes for the rule; None for courses, terms and resources."""
    obj = event.data.object
    deleted = version_of(event).delete
    if type(obj) is User:
        student = obj.roles.student
        person = Person(
            known=True,
            is_student=student is not None,
            deleted=deleted,
            district_id=obj.district_id,
            role_schools=frozenset(student.schools) if student else frozenset(),
            primary_school_id=student.school if student else None,
            sis_id=student.sis_id if student else None,
            name=(obj.name.first, obj.name.middle, obj.name.last),
        )
        return UserChange(event.id, obj.id, person)
    if type(obj) is Section:
        state = SectionState(obj.school, deleted, frozenset(obj.students))
        return SectionChange(event.id, obj.id, state)
    if type(obj) is School:
        return FlagChange(event.id, "schools", obj.id, deleted)
    if type(obj) is District:
        return FlagChange(event.id, "districts", obj.id, deleted)
    return None
