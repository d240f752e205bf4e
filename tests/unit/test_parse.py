from __future__ import annotations

import orjson
import pytest

from schemas.clever import EVENT_TYPES, SectionEvent, UserEvent
from service.webhooks.parse import BodyRejected, parse_body
from tests.support.factory import Factory, page


def test_single_event_keeps_its_exact_bytes() -> None:
    body = b'{"type": "users.created",  "id": "%s", "created": "2026-01-01T00:00:00Z", ' % (
        b"a" * 24
    ) + b'"data": {"object": {"id": "%s", "district": "%s"}}}' % (b"b" * 24, b"c" * 24)
    (parsed,) = parse_body(body, max_events=10)
    assert parsed.raw == body
    assert isinstance(parsed.event, UserEvent)
    assert parsed.event.district_id == "c" * 24


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_validates(event_type: str) -> None:
    event = Factory(seed=1).event(event_type)
    (parsed,) = parse_body(orjson.dumps(page([event])), max_events=10)
    assert parsed.event.type == parsed.event_type == event_type
    assert parsed.event_id == event["id"]
    assert orjson.loads(parsed.raw) == event
    expected_district = (
        event["data"]["object"]["id"]
        if event_type.startswith("districts")
        else event["data"]["object"]["district"]
    )
    assert parsed.event.district_id == expected_district


def test_sections_carry_full_membership_lists() -> None:
    event = Factory(seed=2).event("sections.updated")
    (parsed,) = parse_body(orjson.dumps(event), max_events=1)
    assert isinstance(parsed.event, SectionEvent)
    assert parsed.event.object.students == event["data"]["object"]["students"]


def test_problems_name_index_and_field_for_every_bad_event() -> None:
    factory = Factory(seed=3)
    events = [factory.event() for _ in range(3)]
    del events[0]["data"]["object"]["id"]
    events[2]["type"] = "users.exploded"
    with pytest.raises(BodyRejected) as caught:
        parse_body(orjson.dumps(page(events)), max_events=10)
    found = {(p.index, p.field) for p in caught.value.problems}
    assert found == {(0, "data.object.id"), (2, "type")}
    assert caught.value.status == 400


def test_envelope_items_must_wrap_events() -> None:
    with pytest.raises(BodyRejected) as caught:
        parse_body(b'{"data": [{"data": 1}, "x"]}', max_events=10)
    assert [(p.index, p.field) for p in caught.value.problems] == [(0, "data"), (1, "data")]


def test_event_limit_is_413() -> None:
    events = [Factory(seed=4).event() for _ in range(3)]
    with pytest.raises(BodyRejected) as caught:
        parse_body(orjson.dumps(page(events)), max_events=2)
    assert (caught.value.status, caught.value.error) == (413, "too_many_events")
