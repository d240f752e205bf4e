"""A page of the Events API feed, split into what the pipeline takes and what it cannot."""

from __future__ import annotations

from datetime import datetime

import orjson

from service.clever.envelope import read_page
from service.pull.pages import split_page
from tests.support.factory import Factory, page


def test_a_valid_page_is_taken_whole_and_the_cursor_is_its_last_event() -> None:
    factory = Factory(seed=1)
    events = factory.every_type("5f0c1a2b3c4d5e6f7a8b9c02")
    split = split_page(read_page(orjson.dumps(page(events))))
    assert [p.event_id for p in split.events] == [e["id"] for e in events]
    assert split.invalid == []
    assert split.last_id == events[-1]["id"]
    assert split.last_created == datetime.fromisoformat(events[-1]["created"])


def test_invalid_events_are_kept_apart_with_their_fields_and_the_rest_goes_on() -> None:
    factory = Factory(seed=2)
    district = "5f0c1a2b3c4d5e6f7a8b9c02"
    events = [factory.event("users.updated", district) for _ in range(4)]
    events[1]["type"] = "users.exploded"  # not a Clever event type
    del events[2]["data"]["object"]["district"]  # what the pipeline keys on
    events[3]["data"]["object"]["name"]["first"] = "A\u0000B"  # PostgreSQL cannot store it
    split = split_page(read_page(orjson.dumps(page(events))))
    assert [p.event_id for p in split.events] == [events[0]["id"]]
    assert [(i.index, i.event_id, i.event_type) for i in split.invalid] == [
        (1, events[1]["id"], "users.exploded"),
        (2, events[2]["id"], "users.updated"),
        (3, events[3]["id"], "users.updated"),
    ]
    assert "type" in split.invalid[0].error
    assert "district" in split.invalid[1].error
    assert "U+0000" in split.invalid[2].error
    assert all("A\u0000B" not in i.error and "Ada" not in i.error for i in split.invalid)
    assert orjson.loads(split.invalid[0].raw or b"") == events[1]  # as Clever sent it
    # The cursor moves past the invalid ones too (they are dead-lettered, not re-read).
    assert split.last_id == events[3]["id"]


def test_an_empty_page_moves_nothing() -> None:
    split = split_page(read_page(b'{"data": [], "links": []}'))
    assert split.size == 0 and split.last_id is None
