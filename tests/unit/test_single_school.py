"""The single-school rule and program resolution (pure: every transition, no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.programs.rules import (
    Action,
    ActiveAlert,
    Assignment,
    Catalog,
    Change,
    Conflict,
    FlagChange,
    Person,
    SectionChange,
    SectionState,
    StudentFacts,
    UserChange,
    World,
    apply_change,
    conflict_of,
    programs_of,
    replay,
    transition,
)

CATALOG = Catalog(
    names={"mypath_math": "MyPath Math", "imagine_math_facts": "Imagine Math Facts"},
    single_school=frozenset({"mypath_math"}),
)
MATH_AT_A = Assignment("as1", "mypath_math", "school", "A")


def student(*schools: str, **kw: object) -> StudentFacts:
    values: dict[str, object] = {
        "known": True,
        "is_student": True,
        "district_id": "D",
        "school_ids": frozenset(schools),
    }
    values.update(kw)
    return StudentFacts("s1", **values)  # type: ignore[arg-type]


def run(
    facts: StudentFacts, assignments: list[Assignment], active: ActiveAlert | None = None
) -> Action | None:
    """The rule for one student: their conflict now, and their alert's transition."""
    conflict = conflict_of(facts, programs_of(facts, assignments), CATALOG.single_school)
    return transition(active, conflict)


def active_for(
    facts: StudentFacts, assignments: list[Assignment], status: str = "open"
) -> ActiveAlert:
    conflict = conflict_of(facts, programs_of(facts, assignments), CATALOG.single_school)
    assert conflict is not None
    return ActiveAlert("al1", status, conflict)


def test_programs_come_from_every_scope_with_their_sources() -> None:
    facts = student("A", "B", section_ids=frozenset({"S"}))
    assignments = [
        Assignment("1", "mypath_math", "district", "D"),
        Assignment("2", "mypath_math", "section", "S"),
        Assignment("3", "imagine_math_facts", "student", "s1"),
        Assignment("4", "mypath_reading", "school", "B"),
        Assignment("5", "mypath_reading", "school", "Z"),  # not one of theirs
        Assignment("6", "imagine_purpose", "district", "OTHER"),
    ]
    held = programs_of(facts, assignments)
    assert {code: [a.id for a in sources] for code, sources in held.items()} == {
        "imagine_math_facts": ["3"],
        "mypath_math": ["1", "2"],
        "mypath_reading": ["4"],
    }


def test_none_to_open() -> None:
    assert run(student("A", "B"), [MATH_AT_A]) is Action.OPEN


def test_one_school_or_no_single_school_program_never_alerts() -> None:
    assert run(student("A"), [MATH_AT_A]) is None
    facts = Assignment("f", "imagine_math_facts", "school", "A")
    assert run(student("A", "B"), [facts]) is None


def test_open_to_updated_when_schools_or_programs_change_and_quiet_otherwise() -> None:
    before = student("A", "B")
    alert = active_for(before, [MATH_AT_A])
    assert run(before, [MATH_AT_A], alert) is None  # same conflict: nothing
    assert run(student("A", "B", "C"), [MATH_AT_A], alert) is Action.UPDATE
    more = [MATH_AT_A, Assignment("as2", "mypath_math", "school", "B")]
    assert run(before, more, alert) is Action.UPDATE  # a new source of the program


def test_open_to_resolved_when_a_school_is_dropped() -> None:
    alert = active_for(student("A", "B"), [MATH_AT_A])
    assert run(student("A"), [MATH_AT_A], alert) is Action.RESOLVE


def test_resolved_then_a_new_conflict_opens_a_new_alert() -> None:
    # A resolved alert is not active: the rule sees no alert and opens one.
    assert run(student("A", "C"), [MATH_AT_A], None) is Action.OPEN


def test_acknowledged_to_resolved_and_updates_keep_it_acknowledged() -> None:
    alert = active_for(student("A", "B"), [MATH_AT_A], status="acknowledged")
    assert run(student("A"), [MATH_AT_A], alert) is Action.RESOLVE
    assert run(student("A", "B", "C"), [MATH_AT_A], alert) is Action.UPDATE
    # The update is of the stored alert, not a new one (its status is kept: test_alerts.py).
    world = _world(("SB", "B", frozenset({"s1"})))
    stored = active_for(world.facts("s1"), [MATH_AT_A], status="acknowledged")
    joins_c = SectionChange("e1", "SC", SectionState("C", False, frozenset({"s1"})))
    steps = replay(world, [joins_c], [MATH_AT_A], CATALOG, {"s1": stored})
    assert [(s.action, s.alert) for s in steps] == [(Action.UPDATE, "al1")]


def test_deleted_student_resolves() -> None:
    alert = active_for(student("A", "B"), [MATH_AT_A])
    assert run(student("A", "B", deleted=True), [MATH_AT_A], alert) is Action.RESOLVE
    assert run(student("A", "B", deleted=True), [MATH_AT_A]) is None


def test_program_removed_resolves() -> None:
    alert = active_for(student("A", "B"), [MATH_AT_A])
    assert run(student("A", "B"), [], alert) is Action.RESOLVE


def test_placeholder_and_non_students_are_never_in_conflict() -> None:
    placeholder = StudentFacts("s1", known=False, school_ids=frozenset({"A", "B"}))
    assert run(placeholder, [Assignment("x", "mypath_math", "student", "s1")]) is None
    teacher = student("A", "B", is_student=False)
    assert run(teacher, [MATH_AT_A]) is None


def test_transition_table() -> None:
    c1 = Conflict(("A", "B"), (("mypath_math", (MATH_AT_A,)),))
    c2 = Conflict(("A", "C"), (("mypath_math", (MATH_AT_A,)),))
    alert = ActiveAlert("al", "open", c1)
    assert transition(None, None) is None
    assert transition(None, c1) is Action.OPEN
    assert transition(alert, c1) is None
    assert transition(alert, c2) is Action.UPDATE
    assert transition(alert, None) is Action.RESOLVE


schools = st.frozensets(st.sampled_from("ABCD"), max_size=4)


@given(history=st.lists(st.tuples(schools, st.booleans(), st.booleans()), max_size=30))
def test_any_history_keeps_one_alert_exactly_while_in_conflict(
    history: list[tuple[frozenset[str], bool, bool]],
) -> None:
    """Feeding the decisions back as the stored alert, over any history of schools, assignment
    and deletion: an alert is active exactly while the student is in conflict, opened only when
    none is, updated only when the conflict changed."""
    active: ActiveAlert | None = None
    for school_ids, assigned, deleted in history:
        facts = student(*school_ids, deleted=deleted)
        assignments = [MATH_AT_A] if assigned else []
        action = run(facts, assignments, active)
        actions = [] if action is None else [action]
        conflict = conflict_of(facts, programs_of(facts, assignments), CATALOG.single_school)
        assert (conflict is not None) == (
            assigned and not deleted and "A" in school_ids and len(school_ids) >= 2
        )
        if conflict is None:
            assert actions == ([Action.RESOLVE] if active else [])
            active = None
        else:
            if active is None:
                assert actions == [Action.OPEN]
            else:
                assert actions == ([Action.UPDATE] if active.conflict != conflict else [])
            active = ActiveAlert("al", "open", conflict)


def _world(*sections: tuple[str, str, frozenset[str]]) -> World:
    person = Person(known=True, is_student=True, district_id="D", role_schools=frozenset({"A"}))
    world = World({"s1": person}, {}, {}, set(), set())
    for section_id, school, students in sections:
        apply_change(world, SectionChange("e0", section_id, SectionState(school, False, students)))
    return world


def test_replay_runs_the_rule_after_each_event_of_a_batch() -> None:
    world = _world(("SB", "B", frozenset()), ("SC", "C", frozenset()))
    joined = frozenset({"s1"})
    changes: list[Change] = [
        SectionChange("e1", "SB", SectionState("B", False, joined)),  # A+B: opens
        SectionChange("e2", "SB", SectionState("B", False, frozenset())),  # A: resolves
        SectionChange("e3", "SC", SectionState("C", False, joined)),  # A+C: a new alert
        FlagChange("e4", "schools", "C", True),  # C deleted: no longer counts, resolves
        FlagChange("e5", "schools", "C", True),  # the same again: nobody affected
    ]
    steps = replay(world, changes, [MATH_AT_A], CATALOG, {})
    assert [(s.action, s.alert, s.trigger, s.conflict.school_ids) for s in steps] == [
        (Action.OPEN, "new:1", "e1", ("A", "B")),
        (Action.RESOLVE, "new:1", "e2", ("A", "B")),
        (Action.OPEN, "new:2", "e3", ("A", "C")),
        (Action.RESOLVE, "new:2", "e4", ("A", "C")),
    ]


def test_replay_updates_a_stored_alert_and_a_user_record_fills_a_placeholder() -> None:
    world = _world(("SB", "B", frozenset({"s1", "p1"})))
    stored = active_for(world.facts("s1"), [MATH_AT_A])
    own = Assignment("as9", "mypath_math", "student", "p1")
    arrives = Person(known=True, is_student=True, district_id="D", role_schools=frozenset({"C"}))
    changes: list[Change] = [
        SectionChange("e1", "SC", SectionState("C", False, frozenset({"s1"}))),
        UserChange("e2", "p1", arrives),  # the placeholder's record: B (section) and C
    ]
    steps = replay(world, changes, [MATH_AT_A, own], CATALOG, {"s1": stored})
    assert [(s.student_id, s.action, s.alert) for s in steps] == [
        ("s1", Action.UPDATE, "al1"),
        ("p1", Action.OPEN, "new:1"),
    ]
    assert steps[0].conflict.school_ids == ("A", "B", "C")


OTHER_AT_A = Assignment("as2", "imagine_math_facts", "school", "A")


def _batch() -> tuple[World, list[Change]]:
    world = _world(("SB", "B", frozenset()))
    changes: list[Change] = [
        SectionChange("e1", "SB", SectionState("B", False, frozenset({"s1"}))),
        SectionChange("e2", "SB", SectionState("B", False, frozenset())),
    ]
    return world, changes


def test_replay_ignores_programs_without_the_single_school_rule() -> None:
    world, changes = _batch()
    with_other = replay(world, changes, [MATH_AT_A, OTHER_AT_A], CATALOG, {})
    world, changes = _batch()
    assert with_other == replay(world, changes, [MATH_AT_A], CATALOG, {})
    assert [s.action for s in with_other] == [Action.OPEN, Action.RESOLVE]
    assert all(code == "mypath_math" for s in with_other for code in s.conflict.program_codes)


def test_replay_without_single_school_assignments_only_resolves_stored_alerts() -> None:
    """With no single-school program in scope no one can be in conflict: nothing opens, and an
    alert still open (its assignment removed meanwhile) resolves at the first event that
    reaches its student."""
    world, changes = _batch()
    assert replay(world, changes, [OTHER_AT_A], CATALOG, {}) == []
    world, changes = _batch()
    stored = ActiveAlert("al1", "open", Conflict(("A", "B"), (("mypath_math", (MATH_AT_A,)),)))
    steps = replay(world, changes, [OTHER_AT_A], CATALOG, {"s1": stored})
    assert [(s.action, s.alert, s.trigger) for s in steps] == [(Action.RESOLVE, "al1", "e1")]
