"""The pure roster rules, property-tested: order, duplication and batching never change the end."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.clever import EVENT_ADAPTER, RECORD_KINDS
from service.roster.records import version_of
from service.roster.rules import (
    Incoming,
    Outcome,
    RecordKey,
    Version,
    decide,
    may_be_unchanged,
    plan_batch,
    student_schools,
)
from tests.support.factory import Factory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH = datetime.min.replace(tzinfo=UTC)
RECORDS: list[RecordKey] = [("users", "u1"), ("users", "u2"), ("sections", "s1")]


@st.composite
def streams(draw: st.DrawFn) -> list[Incoming[None]]:
    """Events of a few records: small time range (ties happen), deletes, unique event ids."""
    events = []
    for n in range(draw(st.integers(1, 25))):
        record = draw(st.sampled_from(RECORDS))
        at = T0 + timedelta(seconds=draw(st.integers(0, 6)))
        created = at + timedelta(seconds=draw(st.integers(0, 2)))
        delete = draw(st.booleans())
        version = Version(at, created, delete, f"e{n:03d}")
        events.append(Incoming(f"e{n:03d}", record, version, None))
    return events


def fold(batches: list[list[Incoming[None]]]) -> dict[RecordKey, Version]:
    stored: dict[RecordKey, Version] = {}
    for batch in batches:
        plan = plan_batch(stored, batch)
        stored.update({key: write.version for key, write in plan.writes.items()})
    return stored


def newest(events: list[Incoming[None]]) -> dict[RecordKey, Version]:
    best: dict[RecordKey, Version] = {}
    for event in events:
        if event.record not in best or event.version > best[event.record]:
            best[event.record] = event.version
    return best


@settings(max_examples=400)
@given(streams(), st.data())
def test_any_interleaving_duplication_and_batching_ends_at_the_newest(
    events: list[Incoming[None]], data: st.DataObject
) -> None:
    delivered = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events)))))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(delivered)), max_size=5)))
    bounds = [0, *cuts, len(delivered)]
    batches = [delivered[a:b] for a, b in itertools.pairwise(bounds)]
    assert fold(batches) == newest(events)


@given(streams())
def test_replaying_the_stream_changes_nothing(events: list[Incoming[None]]) -> None:
    stored = fold([events])
    replay = plan_batch(stored, events)
    assert replay.writes == {}
    assert set(replay.outcomes.values()) <= {Outcome.STALE}


@given(streams())
def test_each_event_is_applied_iff_newer_than_all_before_it(events: list[Incoming[None]]) -> None:
    plan = plan_batch({}, events)
    seen: dict[RecordKey, Version] = {}
    for event in events:
        expected = (
            Outcome.APPLIED
            if event.version > seen.get(event.record, Version(EPOCH, EPOCH, False, ""))
            else Outcome.STALE
        )
        assert plan.outcomes[event.event_id] is expected
        seen[event.record] = max(seen.get(event.record, event.version), event.version)


def _at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_tombstone_keeps_older_updates_out_and_newer_ones_in() -> None:
    deleted = Version(_at(5), _at(5), True, "del")
    assert decide(deleted, Version(_at(4), _at(9), False, "old")) is Outcome.STALE
    assert decide(deleted, Version(_at(6), _at(6), False, "new")) is Outcome.APPLIED


def test_ties_resolve_the_same_in_any_order() -> None:
    update = Version(T0, T0, False, "b")
    delete = Version(T0, T0, True, "a")
    assert decide(update, delete) is Outcome.APPLIED  # a delete beats an update of the instant
    assert decide(delete, update) is Outcome.STALE
    assert decide(update, update) is Outcome.STALE  # the same event again


@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_a_record_shared_again_after_its_delete_comes_back(kind: str) -> None:
    """Clever re-shares a record with the `last_modified` it had when it was deleted: at an
    equal `last_modified`, the later event (by `created`) wins, whatever the arrival order."""
    factory = Factory(seed=7)
    obj = factory.obj(kind, factory.oid())
    deleted = factory.event(f"{kind}.deleted", obj=obj)
    reshared = factory.event(f"{kind}.created", obj=obj)  # created later, same last_modified
    delete_v, reshare_v = (
        version_of(EVENT_ADAPTER.validate_python(e)) for e in (deleted, reshared)
    )
    assert delete_v.at == reshare_v.at
    assert decide(delete_v, reshare_v) is Outcome.APPLIED
    assert decide(reshare_v, delete_v) is Outcome.STALE
    record = ("k", "r")
    for order in ([delete_v, reshare_v], [reshare_v, delete_v]):
        plan = plan_batch({}, [Incoming(v.event_id, record, v, None) for v in order])
        assert plan.writes[record].version == reshare_v


def test_student_schools_union_sorted() -> None:
    assert student_schools(["b", "a"], ["c", "a"]) == ["a", "b", "c"]


def test_only_a_live_write_of_a_live_record_at_its_last_modified_may_be_unchanged() -> None:
    """The consumer compares objects (to publish nothing for a re-sync) only for these."""
    live = Version(T0, T0, False, "e1")
    resync = Version(T0, T0 + timedelta(days=1), False, "e2")
    assert may_be_unchanged(live, resync)
    assert not may_be_unchanged(None, resync)  # a new record
    assert not may_be_unchanged(Version(T0, T0, True, "e1"), resync)  # shared again
    assert not may_be_unchanged(live, Version(T0, T0 + timedelta(days=1), True, "e2"))  # archived
    assert not may_be_unchanged(live, Version(T0 + timedelta(seconds=1), T0, False, "e2"))
