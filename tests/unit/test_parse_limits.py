"""What the door accepts the consumer can apply: no U+0000, no nesting past one limit, no event
larger than Kafka takes. Each is refused at the door, naming the event and the field."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from schemas.clever import EVENT_ADAPTER, MAX_DEPTH, MAX_EVENT_BYTES
from service.webhooks.parse import BodyRejected, parse_body
from tests.support.factory import Factory, page


def _refused(body: bytes) -> tuple[int, str, set[tuple[int | None, str]]]:
    with pytest.raises(BodyRejected) as caught:
        parse_body(body, max_events=10)
    rejected = caught.value
    return rejected.status, rejected.error, {(p.index, p.field) for p in rejected.problems}


def _with_nul(where: str) -> dict[str, Any]:
    event = Factory(seed=11).event("users.updated")
    obj = event["data"]["object"]
    if where == "typed field":
        obj["name"]["first"] = "Ada\x00"
    elif where == "extra field":
        obj["roles"]["student"]["ext"] = {"notes": ["fine", "bad\x00"]}
    elif where == "key":
        event["data"]["previous_attributes"] = {"name": {"fir\x00st": "Ada"}}
    return event


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("typed field", "data.object.name.first"),
        ("extra field", "data.object.roles.student.ext.notes.1"),
        ("key", "data.previous_attributes.name"),
    ],
)
def test_nul_anywhere_is_400_naming_event_and_field(where: str, field: str) -> None:
    event = _with_nul(where)
    good = Factory(seed=12).event()
    assert _refused(orjson.dumps(page([good, event]))) == (400, "validation_failed", {(1, field)})
    assert _refused(orjson.dumps(event)) == (400, "validation_failed", {(None, field)})


def test_an_escaped_backslash_before_u0000_is_not_nul() -> None:
    event = Factory(seed=13).event()
    event["data"]["object"]["name"]["first"] = "\\u0000"  # six characters, no U+0000
    (parsed,) = parse_body(orjson.dumps(event), max_events=1)
    assert b"\\\\u0000" in parsed.raw


def _nested(depth: int) -> dict[str, Any]:
    """An event nested `depth` levels deep (the event is level 1) in its previous_attributes."""
    event = Factory(seed=14).event("sections.updated")
    inner: Any = "x"
    for _ in range(depth - 2):  # the event and `data` are the first two levels
        inner = {"a": inner}
    event["data"]["previous_attributes"] = inner
    return event


@pytest.mark.parametrize("as_page", [False, True])
def test_an_event_at_the_depth_limit_is_accepted_and_the_consumer_parses_it(
    as_page: bool,
) -> None:
    event = _nested(MAX_DEPTH)
    body = orjson.dumps(page([event]) if as_page else event)
    (parsed,) = parse_body(body, max_events=1)
    assert EVENT_ADAPTER.validate_json(parsed.raw).id == event["id"]  # as the consumer reads it


# One past the limit; past the consumer's parser (200); past orjson.dumps (254), a 500 before.
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 230, 300])
@pytest.mark.parametrize("as_page", [False, True])
def test_an_event_past_the_depth_limit_is_400(depth: int, as_page: bool) -> None:
    event = _nested(depth)
    # The standard library writes what orjson will not (over 254 levels), as a sender could.
    status, error, problems = _refused(json.dumps(page([event]) if as_page else event).encode())
    ((index, field),) = problems
    assert (status, error, index) == (400, "validation_failed", 0 if as_page else None)
    assert field.startswith("data.previous_attributes.a.a")


def _section_of(students: int) -> dict[str, Any]:
    factory = Factory(seed=15)
    event = factory.event("sections.updated")
    event["data"]["object"]["students"] = [factory.oid() for _ in range(students)]
    return event


def test_an_event_over_the_size_limit_is_413_naming_it() -> None:
    big = _section_of(MAX_EVENT_BYTES // 27 + 100)  # 27 bytes per student id in compact JSON
    assert len(orjson.dumps(big)) > MAX_EVENT_BYTES
    small = Factory(seed=16).event()
    with pytest.raises(BodyRejected) as caught:
        parse_body(orjson.dumps(page([small, big])), max_events=10)
    assert (caught.value.status, caught.value.error) == (413, "event_too_large")
    assert [(p.index, p.field) for p in caught.value.problems] == [(1, "(event)")]
    assert _refused(orjson.dumps(big)) == (413, "event_too_large", {(None, "(event)")})


def test_an_event_under_the_size_limit_is_accepted() -> None:
    event = _section_of(MAX_EVENT_BYTES // 27 - 1000)
    (parsed,) = parse_body(orjson.dumps(event), max_events=1)
    assert len(parsed.raw) <= MAX_EVENT_BYTES
