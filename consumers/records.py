"""What the roster consumer makes of a `clever.events.v1` record: a decoded Clever event, or
poison (not a valid event, or one that could not be applied) bound for the dead-letter topic.

Its own module so that the handler (consumers/roster.py) and the dead-letter sender
(consumers/dead_letters.py) both import it, and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from consumers.runner import Record
from schemas import kafka_headers as h
from schemas.clever import EVENT_ADAPTER, AnyEvent


@dataclass(frozen=True)
class Decoded:
    record: Record
    headers: dict[str, str]
    event: AnyEvent
    event_json: str  # as received

    @property
    def announce(self) -> bool:
        """Downstream hears of this write even if it leaves the record as stored."""
        return self.headers.get(h.ANNOUNCE) == "1"


@dataclass(frozen=True)
class Poison:
    record: Record
    headers: dict[str, str]
    event_id: str | None
    error: str


def decode(record: Record) -> Decoded | Poison:
    headers = h.header_map(record.headers)
    try:
        event = EVENT_ADAPTER.validate_json(record.value or b"")
        event_json = (record.value or b"").decode("utf-8")
    except (ValidationError, UnicodeDecodeError) as exc:
        message = f"not a valid Clever event: {type(exc).__name__}"
        if isinstance(exc, ValidationError):
            first = exc.errors(include_input=False)[0]
            message += f" at {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return Poison(record, headers, headers.get(h.EVENT_ID), message)
    return Decoded(record, headers, event, event_json)
