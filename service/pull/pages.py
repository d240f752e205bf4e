"""A page of a district's Events API feed, split into the events the pipeline takes and the ones
it cannot (pure: no I/O).

The webhook door refuses a whole body for one bad event: its sender can fix it and send again.
The poller cannot: Clever will serve the same page for ever, and refusing it would stall the
district's feed. So a page is taken event by event: the valid events go to ingest, and each
invalid one (not a Clever event, U+0000 or too deep for the pipeline, over 5 MiB) is kept with
its problems (field names and messages, never values) for the dead-letter topic. The cursor
moves past both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from service.clever import Page
from service.webhooks.parse import BodyRejected, ParsedEvent, parse_body


@dataclass(frozen=True)
class InvalidEvent:
    """An event of the page the pipeline cannot take, as Clever sent it."""

    index: int  # its position in the page
    raw: bytes | None  # its JSON (None: it cannot even be written back as JSON)
    event_id: str | None
    event_type: str | None
    error: str  # "<error>: <field>: <message>; ..." (no values)


@dataclass(frozen=True)
class SplitPage:
    events: list[ParsedEvent]
    invalid: list[InvalidEvent]
    # Where the feed stands after this page: its last event's id (valid or not) and `created`.
    last_id: str | None
    last_created: datetime | None

    @property
    def size(self) -> int:
        return len(self.events) + len(self.invalid)


def split_page(page: Page) -> SplitPage:
    """The page's events, valid and invalid, in feed order (see the module)."""
    records = page.records
    last_id, last_created = _position(records)
    if not records:
        return SplitPage([], [], last_id, last_created)
    try:
        # The whole page in one call: what nearly every page is, and the door's fast path.
        events = parse_body(page.body, max_events=len(records))
    except BodyRejected:
        pass
    else:
        return SplitPage(events, [], last_id, last_created)
    valid: list[ParsedEvent] = []
    invalid: list[InvalidEvent] = []
    for index, record in enumerate(records):
        raw = _dumps(record)
        if raw is None:
            invalid.append(_invalid(index, None, record, "invalid_body: cannot be written as JSON"))
            continue
        try:
            valid.extend(parse_body(raw, max_events=1))
        except BodyRejected as exc:
            invalid.append(_invalid(index, raw, record, _describe(exc)))
    return SplitPage(valid, invalid, last_id, last_created)


def _describe(exc: BodyRejected) -> str:
    problems = "; ".join(f"{p.field}: {p.message}" for p in exc.problems)
    return f"{exc.error}: {problems}" if problems else f"{exc.error}: {exc.message}"


def _invalid(index: int, raw: bytes | None, record: dict[str, Any], error: str) -> InvalidEvent:
    event_id = record.get("id")
    event_type = record.get("type")
    return InvalidEvent(
        index,
        raw,
        event_id if isinstance(event_id, str) else None,
        event_type if isinstance(event_type, str) else None,
        error,
    )


def _position(records: list[dict[str, Any]]) -> tuple[str | None, datetime | None]:
    """The last event id of the page (the cursor after it) and that event's `created`."""
    for record in reversed(records):
        event_id = record.get("id")
        if isinstance(event_id, str) and event_id:
            return event_id, _time(record.get("created"))
    return None, None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _dumps(record: dict[str, Any]) -> bytes | None:
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:
        return None
