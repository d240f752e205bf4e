"""Header names on `clever.events.v1` records and on their dead-letter copies (values are UTF-8
bytes): wire contract."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

EVENT_ID = "event-id"
EVENT_TYPE = "event-type"
SOURCE = "source"
RECEIVED_AT = "received-at"  # ISO 8601, UTC, when the door received the event
TRACEPARENT = "traceparent"  # W3C trace context
# "1" on the events of a backfill an operator asked for: the consumer tells downstream of every
# record it writes, even one left exactly as stored (a re-announcement of the district).
ANNOUNCE = "announce"

SOURCES = ("webhook", "poller", "backfill")

# A dead-lettered record (`clever.events.dlq.v1`) keeps the event's own headers and adds these
# (consumers/dead_letters.py); `roster redrive` drops every header with the prefix and stamps the
# copy it re-publishes with REDRIVEN_AT (consumers/redrive.py).
DLQ_PREFIX = "dlq-"
DLQ_ERROR = "dlq-error"  # why (no SQL, no values)
DLQ_ORIGIN = "dlq-origin"  # topic/partition/offset the event was read from
DLQ_AT = "dlq-at"  # ISO 8601, UTC, when it was dead-lettered
REDRIVEN_AT = "redriven-at"  # ISO 8601, UTC, when `roster redrive` re-published it


def header_map(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Decodes a record's headers; the last value wins when a name repeats."""
    return {name: value.decode("utf-8", "replace") for name, value in headers}


def received_at(value: str | None) -> datetime:
    """The door's receipt time from the `received-at` header; now if missing or unreadable."""
    if value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)
