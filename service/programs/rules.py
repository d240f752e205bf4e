"""Programs and the single-school rule, as pure functions (no I/O).

The contract's rules this module holds:

- Programs of a student = assignments to the student, to any of the student's (non-deleted)
  sections or schools, or to the student's district. Each program keeps the assignments it comes
  from, so an alert can say where to fix it.
- Single-school rule: a student who holds a `single_school` program and has two or more schools
  is in conflict. Only a real, live student can be: a deleted student, a user without the student
  role, or a placeholder (a student named by a section whose user record has not arrived, so
  there is no one to name yet) is never in conflict; the placeholder is checked when the record
  arrives.
- Alerts: the first conflict opens one alert; while it lasts, a change of schools or programs
  updates that alert (an acknowledged alert stays acknowledged); when it ends the alert resolves;
  a later conflict opens a new alert.
- Per event: a batch of events is replayed in memory (`replay`) and the rule runs after each
  event for the students it can affect, so the alerts never depend on how the consumer happened
  to batch the stream: a replay into a fresh database opens and resolves the same alerts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from service.roster.rules import student_schools

SCOPES = ("district", "school", "section", "student")


@dataclass(frozen=True, order=True)
class Assignment:
    id: str
    program: str
    scope: str  # one of SCOPES
    scope_id: str


@dataclass(frozen=True)
class StudentFacts:
    """What the rule reads of one student. `known` is False for a placeholder."""

    student_id: str
    known: bool
    is_student: bool = False
    deleted: bool = False
    district_id: str | None = None
    school_ids: frozenset[str] = frozenset()  # live schools only (deleted schools excluded)
    section_ids: frozenset[str] = frozenset()  # live sections listing the student
    primary_school_id: str | None = None


def programs_of(
    facts: StudentFacts, assignments: Iterable[Assignment]
) -> dict[str, tuple[Assignment, ...]]:
    """The student's programs, each with the assignments that grant it (sorted)."""
    scopes = {("student", facts.student_id)}
    scopes |= {("section", s) for s in facts.section_ids}
    scopes |= {("school", s) for s in facts.school_ids}
    if facts.district_id is not None:
        scopes.add(("district", facts.district_id))
    granted: dict[str, list[Assignment]] = {}
    for a in assignments:
        if (a.scope, a.scope_id) in scopes:
            granted.setdefault(a.program, []).append(a)
    return {program: tuple(sorted(sources)) for program, sources in sorted(granted.items())}


@dataclass(frozen=True)
class Conflict:
    """A student in conflict: their schools, and the single-school programs with sources."""

    school_ids: tuple[str, ...]
    programs: tuple[tuple[str, tuple[Assignment, ...]], ...]

    @property
    def program_codes(self) -> list[str]:
        return [code for code, _ in self.programs]


def conflict_of(
    facts: StudentFacts,
    programs: Mapping[str, tuple[Assignment, ...]],
    single_school: frozenset[str],
) -> Conflict | None:
    if not facts.known or not facts.is_student or facts.deleted:
        return None
    held = tuple((code, sources) for code, sources in programs.items() if code in single_school)
    if not held or len(facts.school_ids) < 2:
        return None
    return Conflict(tuple(sorted(facts.school_ids)), held)


@dataclass(frozen=True)
class ActiveAlert:
    """An alert not yet resolved (`open` or `acknowledged`), as stored."""

    id: str
    status: str
    conflict: Conflict


class Action(StrEnum):
    """What happens to an alert. The rule's transitions open, update and resolve; acknowledging
    is an operator's (`assignments.acknowledge`), never the rule's. The value names the action
    in the alert's history and its message type (`alert.<value>`)."""

    OPEN = "opened"
    UPDATE = "updated"
    RESOLVE = "resolved"
    ACKNOWLEDGE = "acknowledged"


def transition(active: ActiveAlert | None, conflict: Conflict | None) -> Action | None:
    """What happens to a student's alert given their conflict now (None: nothing)."""
    if active is None:
        return Action.OPEN if conflict is not None else None
    if conflict is None:
        return Action.RESOLVE
    return Action.UPDATE if conflict != active.conflict else None


@dataclass(frozen=True)
class Catalog:
    names: Mapping[str, str] = field(default_factory=dict)
    single_school: frozenset[str] = frozenset()


# --- per-event replay of a batch ----------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """A student as the rule and the alert text see them (`known` False: a placeholder)."""

    known: bool
    is_student: bool = False
    deleted: bool = False
    district_id: str | None = None
    role_schools: frozenset[str] = frozenset()
    primary_school_id: str | None = None
    sis_id: str | None = None
    name: tuple[str | None, str | None, str | None] = (None, None, None)


@dataclass(frozen=True)
class SectionState:
    school_id: str
    deleted: bool
    students: frozenset[str]  # complete for the sections a batch changes


@dataclass
class World:
    """The part of the roster a batch can touch, as it was before the batch (then as it goes)."""

    people: dict[str, Person]
    sections: dict[str, SectionState]
    memberships: dict[str, set[str]]  # student -> sections listing them (deleted ones too)
    deleted_schools: set[str]
    deleted_districts: set[str]

    def person(self, student_id: str) -> Person:
        return self.people.setdefault(student_id, Person(known=False))

    def facts(self, student_id: str) -> StudentFacts:
        p = self.person(student_id)
        live = {
            sid: self.sections[sid].school_id
            for sid in self.memberships.get(student_id, ())
            if sid in self.sections and not self.sections[sid].deleted
        }
        schools = student_schools(p.role_schools, live.values(), self.deleted_schools)
        return StudentFacts(
            student_id,
            known=p.known,
            is_student=p.is_student,
            deleted=p.deleted or (p.district_id in self.deleted_districts),
            district_id=p.district_id,
            school_ids=frozenset(schools),
            section_ids=frozenset(live),
            primary_school_id=p.primary_school_id,
        )


@dataclass(frozen=True)
class UserChange:
    event_id: str
    user_id: str
    person: Person


@dataclass(frozen=True)
class SectionChange:
    event_id: str
    section_id: str
    state: SectionState


@dataclass(frozen=True)
class FlagChange:
    """A school or district deleted, or back."""

    event_id: str
    kind: str  # "schools" | "districts"
    record_id: str
    deleted: bool


@dataclass(frozen=True)
class Recheck:
    """No change to the roster: re-check these students (an assignment changed)."""

    event_id: str
    students: frozenset[str]


Change = UserChange | SectionChange | FlagChange | Recheck


def apply_change(world: World, change: Change) -> set[str]:
    """Applies one change to the world; returns the students it can affect."""
    if isinstance(change, UserChange):
        world.people[change.user_id] = change.person
        return {change.user_id}
    if isinstance(change, SectionChange):
        old = world.sections.get(change.section_id)
        before = old.students if old is not None else frozenset()
        after = change.state.students
        for student in before - after:
            world.memberships.get(student, set()).discard(change.section_id)
        for student in after - before:
            world.memberships.setdefault(student, set()).add(change.section_id)
        world.sections[change.section_id] = change.state
        return set(before | after)
    if isinstance(change, FlagChange):
        flags = world.deleted_schools if change.kind == "schools" else world.deleted_districts
        if (change.record_id in flags) == change.deleted:
            return set()  # an update that neither deletes nor restores changes no one's schools
        if change.deleted:
            flags.add(change.record_id)
        else:
            flags.discard(change.record_id)
        if change.kind == "districts":
            return {s for s, p in world.people.items() if p.district_id == change.record_id}
        return {
            s
            for s in world.people
            if change.record_id in world.people[s].role_schools
            or any(
                world.sections[sid].school_id == change.record_id
                for sid in world.memberships.get(s, ())
                if sid in world.sections
            )
        }
    return set(change.students)


@dataclass(frozen=True)
class Step:
    """One alert transition. `alert` is the stored alert id, or `new:<n>` for one opened here."""

    student_id: str
    action: Action
    alert: str
    conflict: Conflict  # on RESOLVE: the conflict that ended
    trigger: str


def replay(
    world: World,
    changes: Iterable[Change],
    assignments: Iterable[Assignment],
    catalog: Catalog,
    active: Mapping[str, ActiveAlert],
) -> list[Step]:
    """Applies the changes in order and runs the rule after each for the students it affects.

    Only single-school programs can put a student in conflict, so only their assignments are
    looked at; with none in scope and no alert open, nothing can change and the replay ends
    at once (most batches: their districts hold no such program), leaving `world` as it was.
    """
    assignments = [a for a in assignments if a.program in catalog.single_school]
    if not assignments and not active:
        return []
    current = dict(active)
    steps: list[Step] = []
    opened = 0
    for change in changes:
        for student_id in sorted(apply_change(world, change)):
            facts = world.facts(student_id)
            conflict = conflict_of(facts, programs_of(facts, assignments), catalog.single_school)
            alert = current.get(student_id)
            action = transition(alert, conflict)
            if action is Action.OPEN:
                assert conflict is not None
                opened += 1
                alert = ActiveAlert(f"new:{opened}", "open", conflict)
                current[student_id] = alert
            elif action is Action.UPDATE:
                assert alert is not None and conflict is not None
                current[student_id] = alert = replace(alert, conflict=conflict)
            elif action is Action.RESOLVE:
                assert alert is not None
                del current[student_id]
            else:
                continue
            steps.append(Step(student_id, action, alert.id, alert.conflict, change.event_id))
    return steps
