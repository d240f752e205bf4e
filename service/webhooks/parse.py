"""A webhook body, parsed once, into validated Clever events (pure: no I/O).

Accepts one event or Clever's list envelope `{"data": [{"data": <event>}, ...]}`. Every event is
validated before anything is published: one bad event rejects the whole body, and the error names
the event's index and the field. Error messages never echo values (they may be personal data).
Whatever is accepted, the consumer can apply: an event the pipeline could not carry (U+0000, too
deep: `schemas.clever.unstorable`) is a 400, one over `MAX_EVENT_BYTES` a 413.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from schemas.clever import EVENT_ADAPTER, MAX_EVENT_BYTES, AnyEvent, unstorable

_MAX_REPORTED = 20
# The adapter's compiled validator, called directly: TypeAdapter.validate_python only forwards its
# keyword defaults to it, at a cost per call that a page of 100 events pays 100 times.
_validate = EVENT_ADAPTER.validator.validate_python


@dataclass(frozen=True)
class FieldProblem:
    index: int | None  # position in the envelope's `data`; None for a single-event body
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class BodyRejected(Exception):
    def __init__(
        self,
        error: str,
        message: str,
        problems: list[FieldProblem] | None = None,
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.problems = problems or []
        self.status = status

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.problems:
            body["problems"] = [p.as_dict() for p in self.problems]
        return body


class ParsedEvent(NamedTuple):
    # A named tuple, not a frozen dataclass: a page makes one per event, and a frozen dataclass's
    # __init__ pays an object.__setattr__ per field.
    event: AnyEvent
    raw: bytes  # the event's JSON, as received
    # Read once, while the model is fresh in the cache: ingest reads these for every event (the
    # dedupe key, the event-log row, the Kafka key and headers) long after validation.
    event_id: str
    event_type: str
    district_id: str


def _problems(index: int | None, exc: ValidationError) -> list[FieldProblem]:
    found: list[FieldProblem] = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = list(error["loc"])
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            found.append(
                FieldProblem(
                    index,
                    "type",
                    "missing or unknown event type; expected "
                    "<districts|schools|users|sections|courses|terms|resources>"
                    ".<created|updated|deleted>",
                )
            )
            continue
        if loc and isinstance(loc[0], str) and "." in loc[0]:
            loc = loc[1:]  # the discriminator tag pydantic puts first
        field = ".".join(str(part) for part in loc) or "(event)"
        found.append(FieldProblem(index, field, str(error["msg"])))
    return found


def parse_body(body: bytes, *, max_events: int) -> list[ParsedEvent]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyRejected("malformed_json", f"the body is not valid JSON: {exc.msg}") from None

    if (
        isinstance(document, dict)
        and "type" not in document
        and isinstance(document.get("data"), list)
    ):
        items = document["data"]
        if len(items) > max_events:
            raise BodyRejected(
                "too_many_events",
                f"{len(items)} events in one body; the limit is {max_events}",
                status=413,
            )
        candidates: list[tuple[int | None, Any]] = []
        problems: list[FieldProblem] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
                problems.append(
                    FieldProblem(index, "data", 'each envelope item must be {"data": <event>}')
                )
            else:
                candidates.append((index, item["data"]))
        if not items:
            raise BodyRejected("empty_page", "the envelope holds no events")
    elif isinstance(document, dict):
        candidates, problems = [(None, document)], []
    else:
        raise BodyRejected(
            "invalid_body", "the body must be a Clever event object or a list envelope"
        )

    parsed: list[ParsedEvent] = []
    oversize: list[FieldProblem] = []
    for position, candidate in candidates:
        try:
            event: AnyEvent = _validate(candidate)
        except ValidationError as exc:
            problems.extend(_problems(position, exc))
            continue
        raw = body if position is None else _dumps(candidate)
        fault = unstorable(raw, candidate)
        if fault is not None or raw is None:
            problems.append(FieldProblem(position, *(fault or _UNWRITABLE)))
        elif len(raw) > MAX_EVENT_BYTES:
            oversize.append(FieldProblem(position, "(event)", _TOO_LARGE))
        else:
            parsed.append(ParsedEvent(event, raw, event.id, event.type, event.district_id))
    if problems:
        count = len({p.index for p in problems + oversize})
        raise BodyRejected(
            "validation_failed",
            f"{count} event(s) failed validation; nothing was accepted",
            (problems + oversize)[:_MAX_REPORTED],
        )
    if oversize:
        raise BodyRejected(
            "event_too_large",
            f"{len(oversize)} event(s) over {MAX_EVENT_BYTES} bytes; nothing was accepted",
            oversize[:_MAX_REPORTED],
            status=413,
        )
    return parsed


_TOO_LARGE = f"the event is over {MAX_EVENT_BYTES} bytes as JSON"
_UNWRITABLE = ("(event)", "cannot be written back as JSON")


def _dumps(event: Any) -> bytes | None:
    """A page's event as JSON of its own; None if orjson cannot write it (nested too deep)."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError:
        return None
