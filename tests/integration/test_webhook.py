"""The webhook door on the real broker and database: verification, validation, durability."""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clever import ACTIONS, RECORD_KINDS
from service.db.tables import event_log
from service.kafka.topics import CLEVER_EVENTS
from service.settings import decode_webhook_secret
from service.webhooks.signature import sign
from tests.integration.conftest import Api
from tests.support.factory import Factory, page
from tests.support.services import Services
from tests.support.topic import read_topic
from tests.support.webhook import ADMIN_TOKEN, OLD_SECRET, SECRET, encode, signed_headers

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
OTHER_SECRET = "whsec_" + "b3RoZXIgc2VjcmV0IG5vdCBjb25maWd1cmVkIGhlcmU="


async def _post(api: Api, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    response = await api.client.post("/webhooks/clever", content=body, headers=headers)
    return response.status_code, response.json()


async def _logged(engine: AsyncEngine, ids: list[str]) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(event_log.c.event_id).where(event_log.c.event_id.in_(ids)))
        return {row[0] for row in rows}


# --- signatures -------------------------------------------------------------------------------


def _good(body: bytes) -> dict[str, str]:
    return signed_headers(body)


def _wrong_secret(body: bytes) -> dict[str, str]:
    return signed_headers(body, secret=OTHER_SECRET)


def _rotated(body: bytes) -> dict[str, str]:
    return signed_headers(body, secret=OLD_SECRET)


def _one_good_among_several(body: bytes) -> dict[str, str]:
    headers = signed_headers(body)
    bad = signed_headers(body, secret=OTHER_SECRET)["webhook-signature"]
    headers["webhook-signature"] = f"v1,bm90LWEtc2lnbmF0dXJl {bad} {headers['webhook-signature']}"
    return headers


def _tampered(body: bytes) -> dict[str, str]:
    return signed_headers(body.replace(b"Lovelace", b"Lovelacf"))


def _missing(name: str) -> Callable[[bytes], dict[str, str]]:
    def build(body: bytes) -> dict[str, str]:
        headers = signed_headers(body)
        del headers[name]
        return headers

    return build


def _at(offset: int) -> Callable[[bytes], dict[str, str]]:
    return lambda body: signed_headers(body, timestamp=int(time.time()) + offset)


def _other_scheme(body: bytes) -> dict[str, str]:
    headers = signed_headers(body)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    return headers


def _id_changed(body: bytes) -> dict[str, str]:
    headers = signed_headers(body)
    headers["webhook-id"] = "msg_someone_else"
    return headers


@pytest.mark.parametrize(
    ("build", "status"),
    [
        (_good, 202),
        (_rotated, 202),
        (_one_good_among_several, 202),
        (_at(-290), 202),
        (_at(290), 202),
        (_wrong_secret, 401),
        (_tampered, 401),
        (_missing("webhook-id"), 401),
        (_missing("webhook-timestamp"), 401),
        (_missing("webhook-signature"), 401),
        (_at(-301), 401),
        (_at(301), 401),
        (_at(-86_400), 401),
        (_other_scheme, 401),
        (_id_changed, 401),
    ],
    ids=[
        "good",
        "rotated-secret",
        "one-good-among-several",
        "289s-old",
        "289s-ahead",
        "wrong-secret",
        "tampered-body",
        "no-id",
        "no-timestamp",
        "no-signature",
        "301s-old",
        "301s-ahead",
        "a-day-old",
        "v2-scheme",
        "id-changed",
    ],
)
async def test_signature_matrix(
    api: Api,
    services: Services,
    engine: AsyncEngine,
    build: Callable[[bytes], dict[str, str]],
    status: int,
) -> None:
    event = Factory().event("users.updated")
    body = encode(event)
    code, answer = await _post(api, body, build(body))
    assert code == status, answer
    assert await _logged(engine, [event["id"]]) == ({event["id"]} if status == 202 else set())
    if status == 401:
        assert answer["error"] == "unauthorized"


def test_signature_is_over_the_exact_bytes() -> None:
    key = decode_webhook_secret(SECRET)
    compact, spaced = b'{"a":1}', b'{"a": 1}'
    assert sign(key, "m", 1, compact) != sign(key, "m", 1, spaced)


# --- validation -------------------------------------------------------------------------------


async def test_every_event_type_is_accepted_in_one_page(api: Api, services: Services) -> None:
    events = Factory().every_type()
    assert len(events) == len(RECORD_KINDS) * len(ACTIONS) == 21
    body = encode(page(events))
    code, answer = await _post(api, body, signed_headers(body))
    assert (code, answer) == (202, {"accepted": 21, "duplicates": 0})
    published = await read_topic(
        services.kafka_bootstrap, CLEVER_EVENTS.name, {e["id"] for e in events}
    )
    assert sorted(p.headers["event-type"] for p in published) == sorted(e["type"] for e in events)


def _break(event: dict[str, Any], how: str) -> str:
    """Breaks `event` one way; returns the field the error must name."""
    obj = event["data"]["object"]
    if how == "missing-id":
        del event["id"]
        return "id"
    if how == "bad-id":
        event["id"] = "not-a-clever-id"
        return "id"
    if how == "missing-type":
        del event["type"]
        return "type"
    if how == "unknown-type":
        event["type"] = event["type"].split(".")[0] + ".exploded"
        return "type"
    if how == "missing-object":
        del event["data"]["object"]
        return "data.object"
    if how == "object-not-a-dict":
        event["data"]["object"] = "users"
        return "data.object"
    if how == "missing-object-id":
        del obj["id"]
        return "data.object.id"
    if how == "mistyped-object-id":
        obj["id"] = 12345
        return "data.object.id"
    raise ValueError(how)


BREAKS = [
    "missing-id",
    "bad-id",
    "missing-type",
    "unknown-type",
    "missing-object",
    "object-not-a-dict",
    "missing-object-id",
    "mistyped-object-id",
]


@pytest.mark.parametrize("kind", RECORD_KINDS)
@pytest.mark.parametrize("how", BREAKS)
async def test_one_bad_event_rejects_the_page_and_names_it(
    api: Api, services: Services, engine: AsyncEngine, kind: str, how: str
) -> None:
    factory = Factory()
    events = [factory.event(f"{kind}.updated") for _ in range(4)]
    good_ids = [e["id"] for e in events]
    field = _break(events[2], how)
    body = encode(page(events))
    code, answer = await _post(api, body, signed_headers(body))
    assert code == 400, answer
    assert answer["error"] == "validation_failed"
    assert {"index": 2, "field": field} in [
        {"index": p["index"], "field": p["field"]} for p in answer["problems"]
    ]
    assert await _logged(engine, good_ids) == set()


async def test_district_owned_objects_need_their_district(api: Api) -> None:
    event = Factory().event("sections.created")
    del event["data"]["object"]["district"]
    body = encode(event)
    code, answer = await _post(api, body, signed_headers(body))
    assert code == 400
    assert answer["problems"] == [
        {"index": None, "field": "data.object.district", "message": "Field required"}
    ]


async def test_errors_never_echo_values(api: Api) -> None:
    event = Factory().event("users.updated")
    event["data"]["object"]["name"] = "Ada Lovelace"  # a string where an object belongs
    event["data"]["object"]["roles"]["student"]["dob"] = {"secret": "1/2/2016"}
    body = encode(event)
    code, answer = await _post(api, body, signed_headers(body))
    assert code == 400
    text = orjson.dumps(answer).decode()
    assert "Lovelace" not in text and "1/2/2016" not in text
    assert {p["field"] for p in answer["problems"]} == {
        "data.object.name",
        "data.object.roles.student.dob",
    }


async def test_extra_fields_are_kept(api: Api, services: Services) -> None:
    event = Factory().event("users.created")
    event["future_field"] = {"nested": [1, 2]}
    event["data"]["object"]["roles"]["student"]["ell_status"] = "Y"
    body = encode(page([event]))
    code, _ = await _post(api, body, signed_headers(body))
    assert code == 202
    (published,) = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, {event["id"]})
    assert orjson.loads(published.value) == event


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (b"[1, 2]", "invalid_body"),
        (b'"a string"', "invalid_body"),
        (b'{"data": []}', "empty_page"),
        (b'{"data": [1]}', "validation_failed"),
    ],
)
async def test_malformed_bodies(api: Api, body: bytes, error: str) -> None:
    code, answer = await _post(api, body, signed_headers(body))
    assert (code, answer["error"]) == (400, error)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
async def test_wrong_content_type(api: Api, content_type: str) -> None:
    body = encode(Factory().event())
    headers = signed_headers(body) | {"content-type": content_type}
    code, answer = await _post(api, body, headers)
    assert (code, answer["error"]) == (415, "unsupported_media_type")


async def test_json_with_charset_and_suffix_is_json(api: Api) -> None:
    for content_type in ("application/json; charset=utf-8", "application/cloudevents+json"):
        body = encode(Factory().event())
        code, _ = await _post(api, body, signed_headers(body) | {"content-type": content_type})
        assert code == 202


async def test_oversize_body_declared(api: Api) -> None:
    limit = api.app.state.settings.webhook_max_body_bytes
    body = b'{"pad": "' + b"x" * limit + b'"}'
    code, answer = await _post(api, body, signed_headers(body))
    assert (code, answer["error"]) == (413, "body_too_large")


def _endless_chunked_post(port: int, limit: int) -> bytes:
    """Streams a chunked body well past the limit; returns what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /webhooks/clever HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"webhook-id: m\r\nwebhook-timestamp: 1\r\nwebhook-signature: v1,x\r\n\r\n"
        )
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < limit * 4:  # bounded: four times the limit, then give up sending
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:
            pass  # the server stopped reading and closed: expected
        sock.settimeout(10)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
        return answer


async def test_oversize_body_streamed_without_length(api: Api) -> None:
    port = int(api.base.rsplit(":", 1)[1])
    limit = api.app.state.settings.webhook_max_body_bytes
    answer = await asyncio.to_thread(_endless_chunked_post, port, limit)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


async def test_too_many_events(services: Services) -> None:
    from tests.integration.conftest import api_settings, running_api

    async with running_api(api_settings(services, webhook_max_events=5)) as small:
        events = [Factory().event() for _ in range(6)]
        body = encode(page(events))
        code, answer = await _post(small, body, signed_headers(body))
    assert (code, answer["error"]) == (413, "too_many_events")


# --- durability and dedupe --------------------------------------------------------------------


async def test_every_accepted_event_is_on_the_topic_with_key_and_headers(
    api: Api, services: Services
) -> None:
    factory = Factory()
    district = factory.oid()
    events = [
        factory.event(t, district) for t in ("users.created", "sections.updated", "schools.deleted")
    ]
    events.append(factory.event("districts.updated", district))
    body = encode(page(events))
    headers = signed_headers(body) | {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    }
    code, answer = await _post(api, body, headers)
    assert (code, answer) == (202, {"accepted": 4, "duplicates": 0})
    published = await read_topic(
        services.kafka_bootstrap, CLEVER_EVENTS.name, {e["id"] for e in events}
    )
    assert len(published) == 4
    by_id = {p.event_id: p for p in published}
    for event in events:
        record = by_id[event["id"]]
        assert record.key == district.encode()
        assert orjson.loads(record.value) == event
        assert record.headers["event-type"] == event["type"]
        assert record.headers["source"] == "webhook"
        assert record.headers["traceparent"] == headers["traceparent"]
        assert record.headers["webhook-id"] == headers["webhook-id"]
        assert record.headers["received-at"].startswith("20")
    assert len({p.partition for p in published}) == 1  # one district, one partition, in order
    # The event log's received time is the header's, to the microsecond.
    for event in events:
        status = (await api.client.get(f"/v1/events/{event['id']}", headers=ADMIN)).json()
        received = datetime.fromisoformat(by_id[event["id"]].headers["received-at"])
        assert datetime.fromisoformat(status["received_at"]) == received


async def test_duplicates_are_counted_not_published(api: Api, services: Services) -> None:
    factory = Factory()
    first, second = factory.event(), factory.event()
    body = encode(page([first, first, second]))
    code, answer = await _post(api, body, signed_headers(body))
    assert (code, answer) == (202, {"accepted": 2, "duplicates": 1})
    body = encode(page([first, second]))
    code, answer = await _post(api, body, signed_headers(body))
    assert (code, answer) == (202, {"accepted": 0, "duplicates": 2})
    published = await read_topic(
        services.kafka_bootstrap, CLEVER_EVENTS.name, {first["id"], second["id"]}
    )
    assert sorted(p.event_id for p in published) == sorted([first["id"], second["id"]])


async def test_concurrent_deliveries_of_one_event_publish_once(
    api: Api, services: Services
) -> None:
    event = Factory().event("sections.updated")
    body = encode(event)
    answers = await asyncio.gather(*[_post(api, body, signed_headers(body)) for _ in range(12)])
    assert all(code == 202 for code, _ in answers)
    assert sum(a["accepted"] for _, a in answers) == 1
    assert sum(a["duplicates"] for _, a in answers) == 11
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, {event["id"]})
    assert len(published) == 1


async def test_overlapping_pages_in_parallel_publish_each_event_once(
    api: Api, services: Services
) -> None:
    factory = Factory()
    events = [factory.event() for _ in range(30)]
    pages = [events[i : i + 15] for i in range(0, 30, 5)]  # every event in up to three pages
    bodies = [encode(page(p)) for p in pages] + [encode(page(list(reversed(p)))) for p in pages]
    answers = await asyncio.gather(*[_post(api, b, signed_headers(b)) for b in bodies])
    assert all(code == 202 for code, _ in answers)
    assert sum(a["accepted"] for _, a in answers) == 30
    published = await read_topic(
        services.kafka_bootstrap, CLEVER_EVENTS.name, {e["id"] for e in events}
    )
    assert sorted(p.event_id for p in published) == sorted(e["id"] for e in events)


# --- status, metrics --------------------------------------------------------------------------


async def test_event_status_is_accepted_from_the_202(api: Api) -> None:
    event = Factory().event("terms.created")
    assert (await api.client.get(f"/v1/events/{event['id']}")).status_code == 401
    bad = {"authorization": "Bearer nope"}
    assert (await api.client.get(f"/v1/events/{event['id']}", headers=bad)).status_code == 401
    assert (await api.client.get(f"/v1/events/{event['id']}", headers=ADMIN)).status_code == 404
    body = encode(event)
    code, _ = await _post(api, body, signed_headers(body))
    assert code == 202
    status = (await api.client.get(f"/v1/events/{event['id']}", headers=ADMIN)).json()
    assert status["event_id"] == event["id"]
    assert status["type"] == "terms.created"
    assert status["district_id"] == event["data"]["object"]["district"]
    assert (status["source"], status["status"]) == ("webhook", "accepted")
    assert status["applied_at"] is None and status["error"] is None


async def test_metrics_count_ingest(api: Api) -> None:
    text = (await api.client.get("/metrics")).text
    for series in (
        'roster_webhook_events_total{outcome="accepted"}',
        'roster_webhook_events_total{outcome="duplicate"}',
        'roster_webhook_events_total{outcome="rejected"}',
        "roster_publish_latency_seconds_bucket",
        'roster_http_requests_total{method="POST",route="/webhooks/clever",status="202"}',
    ):
        assert series in text


async def test_a_page_keeps_its_feed_order_on_the_partition(api: Api, services: Services) -> None:
    factory = Factory()
    district = factory.oid()
    events = [factory.event("sections.updated", district) for _ in range(40)]
    events.sort(key=lambda e: e["id"], reverse=True)  # feed order unrelated to id order
    body = encode(page(events))
    code, _ = await _post(api, body, signed_headers(body))
    assert code == 202
    published = await read_topic(
        services.kafka_bootstrap, CLEVER_EVENTS.name, {e["id"] for e in events}
    )
    assert [p.event_id for p in published] == [e["id"] for e in events]


async def test_concurrent_pages_on_one_partition_are_all_accepted(
    api: Api, services: Services
) -> None:
    """Concurrent ingest batches all writing one partition: every page is accepted."""
    factory = Factory()
    district = factory.oid()
    pages = [[factory.event("users.updated", district) for _ in range(50)] for _ in range(40)]
    bodies = [encode(page(p)) for p in pages]
    answers = await asyncio.gather(*[_post(api, b, signed_headers(b)) for b in bodies])
    assert [code for code, _ in answers] == [202] * len(bodies)
    assert sum(a["accepted"] for _, a in answers) == 2000


async def test_logs_carry_ids_never_secrets_or_personal_data(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    from service.logs import JsonFormatter, quiet_library_loggers

    factory = Factory()
    event = factory.event("users.created")
    student = event["data"]["object"]
    student["name"] = {"first": "Zebedee", "middle": "Q", "last": "Marmaduke"}
    student["email"] = "zebedee.marmaduke@example.org"
    student["roles"]["student"]["dob"] = "7/13/2015"
    bad = copy.deepcopy(event)
    bad["id"] = "nope"
    caplog.set_level(logging.DEBUG)  # the most an operator can set...
    quiet_library_loggers()  # ...within the service's logging configuration
    for body in (encode(event), encode(bad)):
        await _post(api, body, signed_headers(body))
    forged = signed_headers(encode(event), secret=OTHER_SECRET)
    await _post(api, encode(event), forged)

    lines = [JsonFormatter().format(record) for record in caplog.records]
    text = "\n".join(lines)
    assert event["id"] in text and student["district"] in text  # ids are there to trace by
    for secret in (
        "Zebedee",
        "Marmaduke",
        "zebedee.marmaduke",
        "7/13/2015",
        SECRET,
        OLD_SECRET,
        SECRET.removeprefix("whsec_"),
        ADMIN_TOKEN,
        forged["webhook-signature"],
    ):
        assert secret not in text


async def test_an_unexpected_failure_is_a_500_and_the_next_request_is_served(api: Api) -> None:
    class Broken:
        async def ingest(self, *_: object) -> None:
            raise RuntimeError("a bug")

    body = encode(Factory().event("users.updated"))
    working = api.app.state.ingestor
    api.app.state.ingestor = Broken()
    try:
        response = await api.client.post(
            "/webhooks/clever", content=body, headers=signed_headers(body)
        )
    finally:
        api.app.state.ingestor = working
    assert response.status_code == 500 and response.json() == {"error": "internal_error"}
    retried = await api.client.post("/webhooks/clever", content=body, headers=signed_headers(body))
    assert retried.status_code == 202
    assert (await api.client.get("/webhooks/clever")).status_code == 405
    text = (await api.client.get("/metrics")).text
    assert 'roster_http_requests_total{method="POST",route="/webhooks/clever",status="500"}' in text
