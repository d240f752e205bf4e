"""One rule for times without a zone, shared by the door and the consumer: they are UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.clever import EVENT_ADAPTER
from service.roster.records import version_of
from service.roster.rules import Outcome, Version, decide
from service.webhooks.parse import parse_body
from tests.support.factory import Factory

TEN_UTC = datetime(2026, 11, 29, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("2026-11-29T10:00:00", TEN_UTC),
        ("2026-11-29T10:00:00.000", TEN_UTC),
        ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),
        ("2026-11-29T10:00:00Z", TEN_UTC),
        ("2026-11-29T11:00:00+01:00", TEN_UTC),
    ],
)
def test_a_time_without_a_zone_is_utc_at_the_door_and_in_the_consumer(
    written: str, meant: datetime
) -> None:
    event = Factory(seed=5).event("districts.updated")
    event["created"] = written
    district = event["data"]["object"]
    district["last_modified"] = district["pause_start"] = written
    (parsed,) = parse_body(orjson.dumps(event), max_events=1)  # the door
    consumed = EVENT_ADAPTER.validate_json(parsed.raw)  # the consumer, from the record's value
    for model in (parsed.event, consumed):
        obj = model.data.object
        for at in (model.created, obj.last_modified, obj.pause_start):  # type: ignore[union-attr]
            assert at == meant
            assert at is not None and at.tzinfo is not None
    # The consumer compares it with the aware version it stored: no naive/aware TypeError.
    earlier = meant - timedelta(seconds=1)
    stored = Version(earlier, earlier, False, "0" * 24)
    assert decide(stored, version_of(consumed)) is Outcome.APPLIED


def test_an_offset_other_than_utc_is_kept() -> None:
    event = Factory(seed=6).event("users.updated")
    event["created"] = "2026-11-29T10:00:00-05:00"
    (parsed,) = parse_body(orjson.dumps(event), max_events=1)
    assert parsed.event.created.utcoffset() == timedelta(hours=-5)
    assert parsed.event.created == datetime(2026, 11, 29, 15, tzinfo=UTC)
