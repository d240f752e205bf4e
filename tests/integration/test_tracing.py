"""One webhook event is one trace: the door's request and its Kafka send, the consumer's batch and
its database transaction, the relay's send, with the trace context on the Kafka record, on the
outbox row and on the downstream message (the door, the consumer and the relay run in this process
as the other integration tests run them, on the real broker and database, with one provider that
exports to memory)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import kafka_headers as h
from schemas.roster_changes import CHANGES_TOPIC
from service import tracing
from service.kafka.topics import CLEVER_EVENTS
from tests.integration.conftest import api_settings, running_api
from tests.support.factory import Factory
from tests.support.pipeline import (
    fresh_group,
    running_consumer,
    running_relay,
    settled_count,
)
from tests.support.services import Services
from tests.support.topic import read_records, read_topic
from tests.support.webhook import encode, signed_headers


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Traces on, into memory, for this test only."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


def _parent(trace_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def _w3c(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def _trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def _parent_id(span: ReadableSpan) -> int | None:
    return int(span.parent.span_id) if span.parent is not None else None


def _only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def _downstream(services: Services, district: str) -> list[dict[str, str]]:
    """The headers of the district's messages on the changes topic."""
    found = []
    for record in await read_records(services.kafka_bootstrap, CHANGES_TOPIC):
        headers = h.header_map(record.headers)
        if headers.get("ce_districtid") == district:
            found.append(headers)
    return found


async def _outbox_traces(engine: AsyncEngine, district: str) -> list[tuple[str | None, bool]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT traceparent, sent_at IS NOT NULL FROM outbox WHERE district_id = :d"),
            {"d": district},
        )
        return [(r[0], r[1]) for r in rows]


async def _all_sent(engine: AsyncEngine, district: str) -> bool:
    rows = await _outbox_traces(engine, district)
    return bool(rows) and all(sent for _, sent in rows)


async def _send_one(api: Any, caller: str) -> tuple[str, str]:
    """Posts one student's `users.created` with the caller's `traceparent`: (event id, district)."""
    factory = Factory()
    district = factory.oid()
    event = factory.event("users.created", district)
    body = encode(event)
    answer = await api.client.post(
        "/webhooks/clever", content=body, headers=signed_headers(body) | {"traceparent": caller}
    )
    assert answer.status_code == 202, answer.text
    return event["id"], district


async def _until_published(
    services: Services, engine: AsyncEngine, eid: str, district: str
) -> None:
    async with asyncio.timeout(60):
        while await settled_count(engine, {eid}) < 1:  # noqa: ASYNC110 (polling the database)
            await asyncio.sleep(0.05)
        while not await _all_sent(engine, district):  # noqa: ASYNC110 (polling the database)
            await asyncio.sleep(0.05)
        while not await _downstream(services, district):  # noqa: ASYNC110 (polling the topic)
            await asyncio.sleep(0.05)


async def test_one_webhook_event_is_one_trace_from_the_door_to_the_downstream_topic(
    services: Services, engine: AsyncEngine, exported: InMemorySpanExporter
) -> None:
    group = await fresh_group(services, "trace")  # the event has a batch to itself
    async with (
        running_api(api_settings(services)) as api,
        running_relay(services, engine),
        running_consumer(services, engine, group) as _,
    ):
        trace_id = secrets.token_hex(16)
        caller = _parent(trace_id)
        eid, district = await _send_one(api, caller)
        await _until_published(services, engine, eid, district)

        # A caller's trace that is not sampled is followed, not recorded.
        unsampled_id = secrets.token_hex(16)
        quiet_eid, quiet_district = await _send_one(api, _parent(unsampled_id, "00"))
        await _until_published(services, engine, quiet_eid, quiet_district)

        # The other routes are traced by FastAPI itself, with the same provider.
        assert (await api.client.get("/healthz")).status_code == 200

    spans = list(exported.get_finished_spans())
    assert [s.kind for s in spans if s.name == "GET /healthz"] == [SpanKind.SERVER]
    ours = [s for s in spans if _trace(s) == trace_id]
    server = _only(ours, "POST /webhooks/clever")
    send = _only(ours, f"send {CLEVER_EVENTS.name}")
    process = _only(ours, f"process {CLEVER_EVENTS.name}")
    apply = _only(ours, "apply batch")
    relayed = _only(ours, f"send {CHANGES_TOPIC}")
    assert sorted(s.name for s in ours) == sorted(
        s.name for s in (server, send, process, apply, relayed)
    )

    # The door continues the caller's span; the consumer, the record's; the relay, the row's.
    assert _parent_id(server) == int(caller.split("-")[2], 16)
    assert server.kind == SpanKind.SERVER
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 202
    assert (send.kind, _parent_id(send)) == (SpanKind.PRODUCER, _id(server))
    assert (process.kind, _parent_id(process)) == (SpanKind.CONSUMER, _id(send))
    assert not process.links  # a batch of one trace: no other trace to link
    assert _parent_id(apply) == _id(process)
    assert (relayed.kind, _parent_id(relayed)) == (SpanKind.PRODUCER, _id(apply))

    # What carries the context between processes: the record, the outbox row, the message.
    (record,) = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, {eid})
    assert record.headers[h.TRACEPARENT] == _w3c(send)
    assert await _outbox_traces(engine, district) == [(_w3c(apply), True)]
    (message,) = await _downstream(services, district)
    assert message[h.TRACEPARENT] == message["ce_traceparent"] == _w3c(relayed)

    # The unsampled trace: no span recorded, the context still carried through, not sampled.
    assert not [s for s in spans if _trace(s) == unsampled_id]
    (quiet_record,) = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, {quiet_eid})
    (quiet_message,) = await _downstream(services, quiet_district)
    for carried in (quiet_record.headers[h.TRACEPARENT], quiet_message["ce_traceparent"]):
        assert carried.startswith(f"00-{unsampled_id}-") and carried.endswith("-00")
