"""`POST /webhooks/clever`: verify, validate, make durable in Kafka, then answer."""

from __future__ import annotations

import logging
import os
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request, Response

from schemas.clever import EVENT_ADAPTER, EventsPage
from service.metrics import EVENTS, REJECTIONS
from service.settings import decode_webhook_secret
from service.webhooks.body import BodyTooLarge, read_limited
from service.webhooks.ingest import Delivery, Ingestor, Unavailable, now_utc
from service.webhooks.parse import BodyRejected, parse_body
from service.webhooks.signature import SignatureError, verify

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhook"])

RETRY_AFTER_S = 5


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _refuse(
    status: int, reason: str, message: str, events: int = 1, body: dict[str, Any] | None = None
) -> Response:
    REJECTIONS.labels(reason).inc()
    EVENTS.labels("rejected").inc(events)
    return _json(status, body or {"error": reason, "message": message})


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _traceparent(given: str | None) -> str:
    # Keep the caller's W3C trace when it sends one; otherwise start a trace here.
    if given and len(given) == 55 and given.count("-") == 3:
        return given
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


_BODY_SCHEMA = {
    "oneOf": [
        EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}"),
        EventsPage.model_json_schema(ref_template="#/components/schemas/{model}"),
    ]
}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Every new event is durably in Kafka",
        "content": {"application/json": {"example": {"accepted": 2, "duplicates": 0}}},
    },
    400: {"description": "Malformed JSON, or an event failed validation; nothing accepted"},
    401: {"description": "Missing or bad signature, or timestamp out of tolerance"},
    413: {"description": "Body over the byte limit, or too many events"},
    415: {"description": "Not JSON"},
    503: {"description": "Kafka (or the database) could not acknowledge in time; retry later"},
}


@router.post(
    "/webhooks/clever",
    status_code=202,
    responses=_RESPONSES,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}
    },
    summary="Receive Clever events signed with Standard Webhooks",
)
async def receive_clever_events(
    request: Request,
    webhook_id: Annotated[str | None, Header()] = None,
    webhook_timestamp: Annotated[str | None, Header()] = None,
    webhook_signature: Annotated[str | None, Header()] = None,
    traceparent: Annotated[str | None, Header()] = None,
) -> Response:
    settings = request.app.state.settings
    if not _is_json(request.headers.get("content-type")):
        return _refuse(415, "unsupported_media_type", "the body must be application/json")
    try:
        body = await read_limited(request, settings.webhook_max_body_bytes)
    except BodyTooLarge:
        return _refuse(
            413, "body_too_large", f"the body exceeds {settings.webhook_max_body_bytes} bytes"
        )

    headers = {
        "webhook-id": webhook_id or "",
        "webhook-timestamp": webhook_timestamp or "",
        "webhook-signature": webhook_signature or "",
    }
    try:
        delivery_ref = verify(
            headers,
            body,
            request.app.state.webhook_keys,
            now=time.time(),
            tolerance=settings.webhook_tolerance_seconds,
        )
    except SignatureError as exc:
        log.info("webhook signature refused", extra={"reason": str(exc), "webhook_id": webhook_id})
        return _refuse(401, "unauthorized", str(exc))

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
        return _refuse(exc.status, exc.error, exc.message, failed, exc.as_dict())

    ingestor: Ingestor = request.app.state.ingestor
    delivery = Delivery("webhook", delivery_ref.webhook_id, _traceparent(traceparent), now_utc())
    try:
        result = await ingestor.ingest(events, delivery)
    except Unavailable as exc:
        log.warning(
            "webhook body not accepted: dependency unavailable",
            extra={
                "dependency": exc.dependency,
                "detail": exc.detail,
                "webhook_id": delivery.delivery_id,
                "event_ids": [p.event.id for p in events[:20]],
            },
        )
        REJECTIONS.labels(f"{exc.dependency}_unavailable").inc()
        return _json(
            503,
            {
                "error": f"{exc.dependency}_unavailable",
                "message": f"{exc.dependency} could not acknowledge in time; retry",
            },
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    log.info(
        "webhook body accepted",
        extra={
            "webhook_id": delivery.delivery_id,
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "event_ids": list(result.accepted_ids[:20]),
            "district_ids": sorted({p.event.district_id for p in events})[:20],
        },
    )
    return _json(202, {"accepted": result.accepted, "duplicates": result.duplicates})


def webhook_keys(secrets: tuple[str, ...]) -> list[bytes]:
    return [decode_webhook_secret(secret) for secret in secrets]
