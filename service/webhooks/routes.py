"""`POST /webhooks/clever`: verify, validate, make durable in Kafka, then answer.

The door is the service's hot path, so it is a plain ASGI endpoint: no dependency injection, no
request object, the raw header list read once. Its OpenAPI entry is written by hand in
`service/webhooks/openapi.py`.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from typing import Any

import orjson
from opentelemetry.trace import SpanKind
from starlette.types import Receive, Scope, Send

from service import tracing
from service.kafka.topics import CLEVER_EVENTS
from service.metrics import EVENTS, HTTP_LATENCY, HTTP_REQUESTS, REJECTIONS
from service.settings import decode_webhook_secret
from service.webhooks import body as body_reader
from service.webhooks.body import BodyTimeout, BodyTooLarge, ClientGone, read_limited
from service.webhooks.delivery import Delivery, now_utc
from service.webhooks.ingest import Ingestor
from service.webhooks.parse import BodyRejected, parse_body
from service.webhooks.results import Unavailable
from service.webhooks.signature import SignatureError, verify

log = logging.getLogger(__name__)

PATH = "/webhooks/clever"
RETRY_AFTER_S = 5
_random = random.Random()  # noqa: S311 (trace ids: unique, not secret; seeded by the OS)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _traceparent(given: str | None) -> str:
    # Keep the caller's W3C trace when it sends one; otherwise start a trace here. Trace ids
    # need to be unique, not secret: the PRNG, not two getrandom() calls per request.
    if given and len(given) == 55 and given.count("-") == 3:
        return given
    trace_id = _random.getrandbits(128) or 1  # all zeros is invalid
    span_id = _random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def webhook_keys(secrets: tuple[str, ...]) -> list[bytes]:
    return [decode_webhook_secret(secret) for secret in secrets]


class _Answer(Exception):
    def __init__(
        self, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status, self.body, self.extra = status, body, extra or []


def _refuse(
    status: int, reason: str, message: str, events: int = 1, body: dict[str, Any] | None = None
) -> _Answer:
    REJECTIONS.labels(reason).inc()
    EVENTS.labels("rejected").inc(events)
    return _Answer(status, body or {"error": reason, "message": message})


class CleverWebhook:
    """The endpoint as an ASGI app (an object, so Starlette does not wrap it in a Request).

    It counts its own requests in the API's request series (route, method, status; duration)
    and answers an unexpected error with a 500 itself: on the hot path, no middleware wraps
    each message it sends."""

    path = PATH

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        try:
            if tracing.active():
                status = await _serve_traced(scope, receive, send)
            else:
                status = await _serve(scope, receive, send)
        finally:
            _request_counter(scope["method"], status).inc()
            _LATENCY.observe(time.perf_counter() - started)


_LATENCY = HTTP_LATENCY.labels(PATH)


@functools.cache
def _request_counter(method: str, status: int) -> Any:
    return HTTP_REQUESTS.labels(PATH, method, str(status))


def _server_attributes() -> tracing.Attributes:
    return {
        "http.request.method": "POST",
        "http.route": PATH,
        "url.path": PATH,
        "messaging.destination.name": CLEVER_EVENTS.name,
    }


async def _serve_traced(scope: Scope, receive: Receive, send: Send) -> int:
    """`_serve` inside the request's server span, which continues the caller's `traceparent`
    (a new trace without one)."""
    given = next((value for name, value in scope["headers"] if name == b"traceparent"), None)
    with tracing.span(
        f"POST {PATH}",
        kind=SpanKind.SERVER,
        context=tracing.remote(given.decode("latin-1") if given else None),
        attributes=_server_attributes,
    ) as span:
        status = await _serve(scope, receive, send)
        tracing.set_attributes(span, lambda: {"http.response.status_code": status})
        if status >= 500:
            tracing.fail(span, f"answered {status}")
    return status


async def _serve(scope: Scope, receive: Receive, send: Send) -> int:
    """Answers the request; returns the status sent (500 for an unexpected error)."""
    try:
        answer = await _handle(scope, receive)
    except _Answer as refused:
        answer = refused
    except ClientGone:
        return 499  # nginx's code for a client that left before the answer
    except Exception:
        log.exception("webhook request failed")
        answer = _Answer(500, {"error": "internal_error"})
    payload = orjson.dumps(answer.body)
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *answer.extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
    return answer.status


async def _handle(scope: Scope, receive: Receive) -> _Answer:
    state = scope["app"].state
    settings = state.settings
    headers = dict(scope["headers"])  # bytes names, lower-case in ASGI
    if not _is_json(headers.get(b"content-type", b"").decode("latin-1")):
        raise _refuse(415, "unsupported_media_type", "the body must be application/json")
    try:
        body = await read_limited(
            receive,
            headers.get(b"content-length"),
            settings.webhook_max_body_bytes,
            body_reader.BODY_DEADLINE_S,
        )
    except BodyTooLarge:
        raise _refuse(
            413, "body_too_large", f"the body exceeds {settings.webhook_max_body_bytes} bytes"
        ) from None
    except BodyTimeout:
        refused = _refuse(
            408, "body_timeout", f"the body did not arrive within {body_reader.BODY_DEADLINE_S} s"
        )
        refused.extra.append((b"connection", b"close"))  # the rest of the body is not read
        raise refused from None

    signed = {
        name: headers.get(name.encode(), b"").decode("latin-1")
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    try:
        delivery_ref = verify(
            signed,
            body,
            state.webhook_keys,
            now=time.time(),
            tolerance=settings.webhook_tolerance_seconds,
        )
    except SignatureError as exc:
        log.info(
            "webhook signature refused",
            extra={"reason": str(exc), "webhook_id": signed["webhook-id"]},
        )
        raise _refuse(401, "unauthorized", str(exc)) from None

    try:
        events = parse_body(body, max_events=settings.webhook_max_events)
    except BodyRejected as exc:
        failed = len({p.index for p in exc.problems}) or 1
        log.info(
            "webhook body rejected",
            extra={
                "reason": exc.error,
                "webhook_id": delivery_ref.webhook_id,
                "problems": [p.as_dict() for p in exc.problems],
            },
        )
        raise _refuse(exc.status, exc.error, exc.message, failed, exc.as_dict()) from None

    ingestor: Ingestor = state.ingestor
    sending = None
    if tracing.active():
        # The send, a child of the request's span: its context is what the records carry, so the
        # consumer continues from it. It lasts until Kafka acknowledged (or the request gave up).
        sending = tracing.start(
            f"send {CLEVER_EVENTS.name}",
            kind=SpanKind.PRODUCER,
            attributes=lambda: {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": CLEVER_EVENTS.name,
                "messaging.batch.message_count": len(events),
            },
        )
        traceparent = tracing.traceparent(sending)
    else:
        trace = headers.get(b"traceparent")
        traceparent = _traceparent(trace.decode("latin-1") if trace else None)
    delivery = Delivery("webhook", delivery_ref.webhook_id, traceparent, now_utc())
    try:
        result = await ingestor.ingest(events, delivery)
    except Unavailable as exc:
        tracing.fail(sending, exc.error)
        log.warning(
            "webhook body not accepted: dependency unavailable",
            extra={
                "dependency": exc.dependency,
                "detail": exc.detail,
                "webhook_id": delivery.delivery_id,
                "event_ids": [p.event_id for p in events[:20]],
            },
        )
        REJECTIONS.labels(exc.error).inc()
        return _Answer(
            503,
            {"error": exc.error, "message": exc.message},
            [(b"retry-after", str(RETRY_AFTER_S).encode())],
        )
    finally:
        if sending is not None:
            sending.end()
    if log.isEnabledFor(logging.INFO):
        log.info(
            "webhook body accepted",
            extra={
                "webhook_id": delivery.delivery_id,
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "event_ids": list(result.accepted_ids[:20]),
                "district_ids": sorted({p.district_id for p in events})[:20],
            },
        )
    return _Answer(202, {"accepted": result.accepted, "duplicates": result.duplicates})
