"""The Clever simulator's state, driven directly (no HTTP): seeding, changes (record AND event),
unshare and re-share, truth, expiry, faults and the rate limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devstack.simulator import CleverSimulator, Fault, Size
from devstack.simulator.faults import Faults, RateLimiter
from devstack.simulator.seed import bands

SIZE = Size(schools=5, students=80, sections=15, two_school_share=0.2)


def test_the_same_seed_gives_the_same_districts() -> None:
    epoch = datetime(2026, 8, 1, tzinfo=UTC)
    one = CleverSimulator(seed=5, size=SIZE, epoch=epoch)
    two = CleverSimulator(seed=5, size=SIZE, epoch=epoch)
    d = one.district_ids[0]
    assert two.district_ids == [d]
    for kind in ("schools", "terms", "courses", "sections", "users"):
        assert one.records(d, kind) == two.records(d, kind)
    assert one.token(d) == two.token(d)
    assert CleverSimulator(seed=6, size=SIZE).district_ids != [d]


def test_a_seeded_district_has_what_the_issue_asks_for() -> None:
    sim = CleverSimulator(seed=1, size=SIZE)
    d = sim.district_ids[0]
    district = sim.district(d)
    schools = sim.records(d, "schools")
    assert len(schools) == 5 and {(s["low_grade"], s["high_grade"]) for s in schools} == {
        ("Kindergarten", "5"),
        ("6", "8"),
        ("9", "12"),
    }
    users = district.kind("users")
    assert len(users.ids("student")) == 80
    assert len(sim.records(d, "sections")) == 15
    assert all(len(s["teachers"]) >= 1 for s in sim.records(d, "sections"))
    assert users.ids("contact") and users.ids("staff") and users.ids("district_admin")
    several = [u for u in users.records.values() if len(u["roles"]) > 1]
    assert several and all("student" not in u["roles"] for u in several)
    truth = sim.truth(d)
    assert any(len(t.schools) > 1 for t in truth.values())  # some students in two schools
    assert all(t.sections for t in truth.values())
    assert all(len(i) == 24 for i in users.ids())
    assert sim.events(d) == []  # seeded records predate the feed


def test_bands() -> None:
    assert bands(1) == [(0, 12)]
    assert len(bands(60)) == 60 and bands(60).count((0, 5)) == 36


def test_every_change_writes_the_record_and_its_event_in_time_order() -> None:
    sim = CleverSimulator(size=SIZE)
    d = sim.district_ids[0]
    changes = sim.a_day_of_changes(d, 60)
    events = sim.events(d)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids)
    assert [e for c in changes for e in c.event_ids] == ids
    created = [e["created"] for e in events]
    assert created == sorted(created) and len(set(created)) == len(created)
    district = sim.district(d)
    for event in events:  # the newest event of each live record carries it as it now is
        kind = event["type"].split(".")[0]
        record = district.kind(kind).get(event["data"]["object"]["id"])
        if record is not None and event["id"] == _newest(events, record["id"]):
            assert event["data"]["object"] == record


def _newest(events: list[dict[str, object]], record_id: str) -> object:
    return [e["id"] for e in events if e["data"]["object"]["id"] == record_id][-1]  # type: ignore[index]


def test_a_move_changes_schools_and_sections() -> None:
    sim = CleverSimulator(size=SIZE)
    d = sim.district_ids[0]
    # A student of one school: one in two keeps the sections of the school they do not leave.
    truth = sim.truth(d)
    student = next(
        s for s in sim.district(d).kind("users").ids("student") if len(truth[s].schools) == 1
    )
    before = truth[student]
    change = sim.move_student(d, student)
    after = sim.truth(d)[student]
    record = sim.district(d).kind("users").records[student]
    assert record["roles"]["student"]["school"] in after.schools
    assert before.schools[0] not in after.schools
    assert set(after.sections).isdisjoint(before.sections)
    types = [e["type"] for e in sim.events(d)]
    assert "users.updated" in types and "sections.updated" in types
    assert len(change.event_ids) == len(types)


def test_delete_unshare_and_reshare() -> None:
    sim = CleverSimulator(size=SIZE)
    d = sim.district_ids[0]
    users = sim.district(d).kind("users")
    deleted, unshared = users.ids("student")[:2]
    sim.delete_student(d, deleted)
    assert deleted not in users and sim.truth(d)[deleted].deleted
    assert sim.truth(d)[deleted].sections == ()  # it left its sections first
    last_modified = users.records[unshared]["last_modified"]
    sim.unshare(d, unshared)
    assert unshared not in users and sim.truth(d)[unshared].deleted
    gone = sim.events(d)[-1]
    assert gone["type"] == "users.deleted"
    assert gone["data"]["object"]["last_modified"] == last_modified
    sim.reshare(d, unshared)
    back = sim.events(d)[-1]
    assert back["type"] == "users.created" and unshared in users
    assert back["data"]["object"]["last_modified"] == last_modified
    assert not sim.truth(d)[unshared].deleted
    with pytest.raises(LookupError):
        sim.reshare(d, deleted)  # deleted at the source: nothing to share again


def test_events_expire_after_30_days() -> None:
    sim = CleverSimulator(size=SIZE)
    d = sim.district_ids[0]
    sim.a_day_of_changes(d, 5)
    sim.advance_clock(timedelta(days=29))
    assert sim.expire_events() == 0
    sim.advance_clock(timedelta(days=2))
    kept = len(sim.district(d).feed)
    assert kept > 0 and sim.expire_events() == kept and sim.newest_event_id(d) is None


def test_tokens_revoke_and_rotate() -> None:
    sim = CleverSimulator(districts=2, size=SIZE)
    d, other = sim.district_ids
    old = sim.token(d)
    assert old is not None and sim.district_of(old) is sim.district(d)
    sim.revoke_token(d)
    assert sim.district_of(old) is None and sim.token_list(d) == []
    new = sim.rotate_token(d)
    assert new != old and sim.token_list(d)[0]["access_token"] == new
    assert [e["owner"]["id"] for e in sim.token_list()] == [d, other]


def test_faults_are_taken_in_order_and_counted() -> None:
    faults = Faults()
    faults.add(Fault("server_error", 2, district_id="a"))
    faults.add(Fault("slow", None, 0.5, path="/v3.0/events"))
    assert faults.take("b", "/v3.0/users") is None
    assert faults.take("a", "/v3.0/users").kind == "server_error"  # type: ignore[union-attr]
    assert faults.take("a", "/v3.0/events").kind == "server_error"  # type: ignore[union-attr]
    assert faults.take("a", "/v3.0/events").kind == "slow"  # type: ignore[union-attr]
    assert faults.take("a", "/v3.0/events").kind == "slow"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown fault"):
        faults.add(Fault("bogus", 1))  # type: ignore[arg-type]


def test_the_rate_limit_counts_per_token_in_fixed_windows() -> None:
    limiter = RateLimiter(2, 60.0)
    assert limiter.admit("t", now=100.0)[0] and limiter.admit("t", now=101.0)[0]
    refused, headers = limiter.admit("t", now=102.0)
    assert not refused and headers["X-RateLimit-Reset"] == "160"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert limiter.admit("other", now=102.0)[0]
    assert limiter.admit("t", now=160.0)[0]


def test_its_repr_names_the_seed_a_failing_test_needs() -> None:
    assert repr(CleverSimulator(seed=5, size=SIZE)).startswith("CleverSimulator(seed=5, ")


@pytest.mark.parametrize("seed", range(20))
def test_the_share_in_two_schools_is_exact_and_never_none(seed: int) -> None:
    sim = CleverSimulator(seed=seed, size=Size(schools=4, students=60, sections=12))
    (d,) = sim.district_ids
    assert sum(len(t.schools) > 1 for t in sim.truth(d).values()) == 3  # 5% of 60
