"""The webhook door when Kafka or the database is down: 503 in time, and nothing lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.kafka import free_port
from service.db.tables import event_log
from service.kafka.topics import CLEVER_EVENTS
from tests.integration.conftest import Api, api_settings, running_api
from tests.support.factory import Factory, page
from tests.support.services import Services, start_kafka, stop_kafka
from tests.support.topic import read_topic
from tests.support.webhook import encode, signed_headers

BOUND_S = 2.0


async def _deliver(
    api: Api, body: bytes, webhook_id: str
) -> tuple[int, dict[str, Any], float, str | None]:
    started = time.monotonic()
    response = await api.client.post(
        "/webhooks/clever", content=body, headers=signed_headers(body, webhook_id=webhook_id)
    )
    return (
        response.status_code,
        response.json(),
        time.monotonic() - started,
        response.headers.get("retry-after"),
    )


async def test_broker_outage_then_retries_lose_and_double_nothing(
    services: Services, engine: AsyncEngine
) -> None:
    if services.local_kafka is None:
        pytest.skip("stopping the broker needs the project's own broker")
    factory = Factory()
    singles = [factory.event("users.updated") for _ in range(5)]
    paged = [factory.event("sections.updated") for _ in range(20)]
    deliveries = [(encode(e), f"msg_single_{i}") for i, e in enumerate(singles)]
    deliveries.append((encode(page(paged)), "msg_page"))
    all_ids = {e["id"] for e in singles + paged}

    async with running_api(api_settings(services, publish_timeout_seconds=BOUND_S)) as api:
        await asyncio.to_thread(stop_kafka, services)
        try:
            outcomes = await asyncio.gather(*[_deliver(api, b, w) for b, w in deliveries])
            for code, answer, elapsed, retry_after in outcomes:
                assert code == 503, answer  # never a 2xx while the broker is down
                assert answer["error"] == "kafka_unavailable"
                assert retry_after is not None and int(retry_after) > 0
                assert elapsed < BOUND_S + 2.0  # bounded: never a hang
            ready = await api.client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["down"] == ["kafka"]
            assert (await api.client.get("/healthz")).status_code == 200
            async with engine.connect() as conn:
                logged = await conn.scalar(
                    select(func.count())
                    .select_from(event_log)
                    .where(event_log.c.event_id.in_(all_ids))
                )
            assert logged == 0  # no dedupe record outlived the failed publish
        finally:
            await asyncio.to_thread(start_kafka, services)

        # The sender retries each delivery (same webhook id) with backoff until it succeeds.
        accepted = duplicates = 0
        for body, webhook_id in deliveries:
            async with asyncio.timeout(60):
                while True:
                    code, answer, _, _ = await _deliver(api, body, webhook_id)
                    if code == 202:
                        accepted += answer["accepted"]
                        duplicates += answer["duplicates"]
                        break
                    assert code == 503
                    await asyncio.sleep(0.5)
        assert accepted + duplicates == len(all_ids)
        await api.app.state.ingestor.drain()
        assert (await api.client.get("/readyz")).status_code == 200

    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, all_ids)
    assert sorted(p.event_id for p in published) == sorted(all_ids)  # each exactly once
    async with engine.connect() as conn:
        statuses = (
            await conn.execute(select(event_log.c.status).where(event_log.c.event_id.in_(all_ids)))
        ).all()
    assert len(statuses) == len(all_ids) and {s[0] for s in statuses} == {"accepted"}


async def test_unreachable_kafka_at_start(services: Services) -> None:
    dead = f"127.0.0.1:{free_port()}"
    settings = api_settings(services, kafka_bootstrap_servers=dead)
    from service.app import create_app

    app = create_app(settings)
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["down"] == ["kafka"]
            body = encode(Factory().event())
            started = time.monotonic()
            response = await client.post(
                "/webhooks/clever", content=body, headers=signed_headers(body)
            )
            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert time.monotonic() - started < 1.0


async def test_unreachable_database(services: Services, api: Api) -> None:
    broken = "postgresql://postgres@/roster?host=/nonexistent-socket-dir"
    async with running_api(api_settings(services, database_url=broken)) as down:
        ready = await down.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["down"] == ["database"]
        event = Factory().event()
        body = encode(event)
        response = await down.client.post(
            "/webhooks/clever", content=body, headers=signed_headers(body)
        )
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
        assert response.headers["retry-after"]
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, {event["id"]})
    assert published == []  # nothing published without its dedupe record


async def test_hung_broker_retry_joins_the_send_already_on_its_way(
    services: Services, engine: AsyncEngine
) -> None:
    """A paused broker accepts connections but never answers: the request is still bounded, and
    a retry made while the first send is buffered joins it instead of sending a second copy."""
    if services.kafka is None:
        pytest.skip("pausing the broker needs the project's own broker")
    event = Factory().event("users.updated")
    body = encode(event)
    async with running_api(api_settings(services, publish_timeout_seconds=BOUND_S)) as api:
        # One accepted delivery first: the producer then holds the topic's metadata, so the
        # paused broker's send is buffered (rather than waiting for metadata, never sent).
        warm = encode(Factory().event())
        assert (await _deliver(api, warm, "msg_warm"))[0] == 202
        os.kill(services.kafka.pid, signal.SIGSTOP)
        try:
            for _ in range(2):  # the delivery, then the sender's retry, both while paused
                code, answer, elapsed, _ = await _deliver(api, body, "msg_hung")
                assert (code, answer["error"]) == (503, "kafka_unavailable")
                assert elapsed < BOUND_S + 2.0
            assert api.app.state.ingestor.inflight == 1  # one send on its way, not two
        finally:
            os.kill(services.kafka.pid, signal.SIGCONT)
        async with asyncio.timeout(60):
            while (code := (await _deliver(api, body, "msg_hung"))[0]) != 202:
                assert code == 503
                await asyncio.sleep(0.5)
        await api.app.state.ingestor.drain()
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, {event["id"]})
    assert len(published) == 1


async def test_dropped_database_connections_cost_the_sender_one_retry_at_most(
    services: Services, engine: AsyncEngine
) -> None:
    """The door's pool does not ping each connection before use. When the server drops its
    connections (a restart, a failover), the first batch on a dead one answers 503 and the pool
    replaces all of them, so the sender's retry is accepted; nothing is lost or doubled."""
    factory = Factory()
    warm, event = factory.event("users.updated"), factory.event("users.updated")
    async with running_api(api_settings(services)) as api:
        assert (await _deliver(api, encode(warm), "msg_warm_pool"))[0] == 202
        async with engine.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert killed >= 1
        codes: list[int] = []
        async with asyncio.timeout(30):
            while not codes or codes[-1] != 202:
                code, answer, _, retry_after = await _deliver(api, encode(event), "msg_after_kill")
                codes.append(code)
                if code != 202:
                    assert (code, answer["error"]) == (503, "database_unavailable")
                    assert retry_after is not None
    assert codes in ([202], [503, 202])
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, {event["id"]})
    assert [p.event_id for p in published] == [event["id"]]
