"""The alerts' rows, history and `roster.alerts.v1` messages (pure: no broker, no database)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from schemas.roster_alerts import ALERT_MESSAGE_TYPES, ALERTS_TOPIC
from service.outbox.store import Outgoing
from service.programs.alerts import (
    AlertResolved,
    StoredAlert,
    acknowledgement,
    alert_writes,
)
from service.programs.rules import Action, Assignment, Catalog, Conflict, Person, Step

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
CATALOG = Catalog(names={"mypath_math": "MyPath Math"}, single_school=frozenset({"mypath_math"}))
MATH_AT_D = Assignment("as1", "mypath_math", "district", "D")
PROGRAMS = (("mypath_math", (MATH_AT_D,)),)
AB = Conflict(("A", "B"), PROGRAMS)
ABC = Conflict(("A", "B", "C"), PROGRAMS)
PEOPLE = {
    "s1": Person(
        known=True,
        is_student=True,
        district_id="D",
        role_schools=frozenset({"A"}),
        primary_school_id="B",
        sis_id="sis-1",
        name=("Ada", None, "Lovelace"),
    )
}
NAMES = {"A": "Adams", "B": "Burr"}  # C's record has not arrived


def _ids() -> Callable[[], str]:
    return lambda: "id1"  # the id of a new alert


def _valid(messages: list[Outgoing]) -> None:
    for m in messages:
        assert m.topic == ALERTS_TOPIC
        ALERT_MESSAGE_TYPES[m.type].model_validate(m.data | {"sequence": 1})  # extra="forbid"


def test_a_batch_that_opens_updates_and_resolves_one_alert_inserts_it_as_it_ends() -> None:
    steps = [
        Step("s1", Action.OPEN, "new:1", AB, "e1"),
        Step("s1", Action.UPDATE, "new:1", ABC, "e2"),
        Step("s1", Action.RESOLVE, "new:1", ABC, "e3"),
    ]
    writes = alert_writes(steps, PEOPLE, CATALOG, {}, NAMES, NOW, _ids())
    _valid(writes.messages)
    assert [(m.type, m.key, m.district_id) for m in writes.messages] == [
        ("alert.opened", "s1", "D"),
        ("alert.updated", "s1", "D"),
        ("alert.resolved", "s1", "D"),
    ]
    opened = writes.messages[0].data
    assert opened["id"] == "id1" and opened["status"] == "open"
    assert opened["opened_at"] == NOW.isoformat() and opened["resolved_at"] is None
    assert opened["student"] == {
        "id": "s1",
        "sis_id": "sis-1",
        "name": {"first": "Ada", "middle": None, "last": "Lovelace"},
        "primary_school_id": "B",
    }
    assert opened["schools"] == [{"id": "A", "name": "Adams"}, {"id": "B", "name": "Burr"}]
    assert opened["programs"] == [
        {
            "code": "mypath_math",
            "name": "MyPath Math",
            "sources": [{"assignment_id": "as1", "scope": "district", "scope_id": "D"}],
        }
    ]
    assert opened["suggested_school_id"] == "B"
    assert opened["trigger_event_id"] == opened["source_event_id"] == "e1"
    assert writes.messages[1].data["schools"][2] == {"id": "C", "name": None}
    assert writes.messages[2].data["status"] == "resolved"
    assert {m.data["id"] for m in writes.messages} == {"id1"}

    assert writes.updates == []
    [row] = writes.inserts
    assert (row.id, row.new, row.status, row.resolved_at) == ("id1", True, "resolved", NOW)
    assert row.school_ids == ["A", "B", "C"] and row.trigger_event_id == "e3"
    assert row.detail == writes.messages[2].data
    assert [(h.alert_id, h.action, h.trigger_event_id) for h in writes.history] == [
        ("id1", Action.OPEN, "e1"),
        ("id1", Action.UPDATE, "e2"),
        ("id1", Action.RESOLVE, "e3"),
    ]
    assert writes.history[0].school_ids == ["A", "B"]
    assert writes.history[0].programs == ["mypath_math"]


def test_an_update_of_a_stored_alert_keeps_its_status_and_times() -> None:
    stored = alert_writes(
        [Step("s1", Action.OPEN, "new:1", AB, "e1")], PEOPLE, CATALOG, {}, NAMES, NOW, _ids()
    )
    detail = stored.messages[0].data | {
        "status": "acknowledged",
        "acknowledged_at": NOW.isoformat(),
    }
    later = datetime(2026, 11, 30, tzinfo=UTC)
    step = Step("s1", Action.UPDATE, "id1", ABC, "e2")
    writes = alert_writes([step], PEOPLE, CATALOG, {"id1": detail}, NAMES, later, _ids())
    _valid(writes.messages)
    [message] = writes.messages
    assert message.type == "alert.updated"
    assert message.data["status"] == "acknowledged"
    assert message.data["acknowledged_at"] == message.data["opened_at"] == NOW.isoformat()
    assert writes.inserts == []
    [row] = writes.updates
    assert (row.id, row.new, row.status, row.at, row.resolved_at) == (
        "id1",
        False,
        "acknowledged",
        later,
        None,
    )


def test_the_suggested_school_is_the_primary_only_when_it_is_one_of_the_schools() -> None:
    elsewhere = {"s1": Person(known=True, is_student=True, primary_school_id="Z")}
    writes = alert_writes(
        [Step("s1", Action.OPEN, "new:1", AB, "e1")], elsewhere, CATALOG, {}, {}, NOW, _ids()
    )
    _valid(writes.messages)
    data = writes.messages[0].data
    assert data["suggested_school_id"] is None and data["district_id"] == ""
    assert data["schools"] == [{"id": "A", "name": None}, {"id": "B", "name": None}]


def _stored(status: str) -> StoredAlert:
    opened = alert_writes(
        [Step("s1", Action.OPEN, "new:1", AB, "e1")], PEOPLE, CATALOG, {}, NAMES, NOW, _ids()
    )
    detail = opened.messages[0].data | {"status": status}
    return StoredAlert("id1", "s1", "D", status, detail, ["A", "B"], "e1")


def test_acknowledging_changes_the_status_only_and_is_an_action_like_the_others() -> None:
    later = datetime(2026, 11, 30, tzinfo=UTC)
    ack = acknowledgement(_stored("open"), later)
    assert ack is not None
    _valid([ack.message])
    assert (ack.message.type, ack.message.key, ack.message.district_id) == (
        "alert.acknowledged",
        "s1",
        "D",
    )
    assert ack.message.data is ack.detail
    assert ack.detail == _stored("open").detail | {
        "status": "acknowledged",
        "acknowledged_at": later.isoformat(),
    }
    h = ack.history
    assert (h.alert_id, h.action, h.at, h.trigger_event_id) == (
        "id1",
        Action.ACKNOWLEDGE,
        later,
        "e1",
    )
    assert h.school_ids == ["A", "B"] and h.programs == ["mypath_math"]


def test_acknowledging_again_changes_nothing_and_a_resolved_alert_refuses() -> None:
    assert acknowledgement(_stored("acknowledged"), NOW) is None
    with pytest.raises(AlertResolved):
        acknowledgement(_stored("resolved"), NOW)
