"""The webhook door when a dependency stops answering rather than failing: a database that hangs
at COMMIT, a queue that fills behind it, a broker that never acknowledges. Every request is answered
503 within its bounds, for the right dependency, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from service.db.driver_pool import DriverPool, driver_dsn
from service.kafka.gateway import KafkaGateway
from service.kafka.topics import CLEVER_EVENTS
from service.webhooks.delivery import Delivery, now_utc
from service.webhooks.ingest import Ingestor
from service.webhooks.parse import ParsedEvent, parse_body
from service.webhooks.results import IngestResult, Unavailable
from tests.integration.conftest import api_settings, running_api
from tests.support.factory import Factory
from tests.support.services import Services
from tests.support.topic import read_topic
from tests.support.webhook import encode, signed_headers

GUARD_S = 30.0  # fails a test that would hang; no test waits this long when it passes


async def _until(check: Callable[[], object]) -> None:
    """Polls `check` (a condition, or a coroutine returning one) until it holds."""
    async with asyncio.timeout(GUARD_S):
        while True:
            held = check()
            if inspect.isawaitable(held):
                held = await held
            if held:
                return
            await asyncio.sleep(0.01)


async def _stalled_commits(conn: Any) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event = 'SyncRep' AND pid <> pg_backend_pid()"
        )
    )


async def _stalled_commits_over(conn: Any, count: int) -> bool:
    return await _stalled_commits(conn) > count


async def _waits_or_done(probing: asyncio.Task[Any], conn: Any) -> bool:
    return probing.done() or await _stalled_commits(conn) > 0


@asynccontextmanager
async def commits_hang(services: Services) -> AsyncIterator[Any]:
    """Every COMMIT that wrote something waits for a synchronous standby that never connects:
    how a primary stops answering at COMMIT when its synchronous replica is gone, while the
    statements before it still answer. Yields an admin connection; reopens on exit, which lets
    every waiting COMMIT finish."""
    admin = await asyncpg.connect(driver_dsn(services.database_url))
    try:
        if not await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            pytest.skip("stalling commits needs a superuser (ALTER SYSTEM)")
        await admin.execute("SET synchronous_commit = local")  # its own commits never wait
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        await admin.execute("SELECT pg_reload_conf()")
        probe = await asyncpg.connect(driver_dsn(services.database_url))
        probing: asyncio.Task[Any] | None = None
        try:
            # The checkpointer applies the reload; a probe's COMMIT that waits shows it has.
            while probing is None or probing.done():
                probing = asyncio.create_task(
                    probe.execute("BEGIN; CREATE TEMP TABLE IF NOT EXISTS p (x int); COMMIT")
                )
                await _until(functools.partial(_waits_or_done, probing, admin))
            yield admin
        finally:
            await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            await admin.execute("SELECT pg_reload_conf()")
            if probing is not None:
                await asyncio.wait_for(probing, GUARD_S)
            await probe.close()
    finally:
        await admin.close()


def _parsed(event: dict[str, Any]) -> list[ParsedEvent]:
    return parse_body(encode(event), max_events=10)


def _delivery(name: str) -> Delivery:
    return Delivery("webhook", f"msg_{name}", f"00-{'1' * 32}-{'2' * 16}-01", now_utc())


@asynccontextmanager
async def door(services: Services, batches: int = 1, **options: Any) -> AsyncIterator[Ingestor]:
    """The door's ingest on the real database and broker, `batches` batches at a time."""
    pool = DriverPool(driver_dsn(services.database_url), size=3)
    kafka = KafkaGateway(services.kafka_bootstrap)
    kafka.start()
    ingestor = Ingestor(pool, kafka, max_concurrent_batches=batches, **options)
    try:
        async with asyncio.timeout(GUARD_S):
            await kafka.connected.wait()
        warm = Factory().event()  # the producer then holds the topic's metadata
        assert (await ingestor.ingest(_parsed(warm), _delivery("warm"))).accepted == 1
        yield ingestor
    finally:
        await asyncio.wait_for(ingestor.drain(), GUARD_S)
        await kafka.stop()
        await pool.close()


async def test_a_database_that_hangs_at_commit_gets_503_and_the_retry_loses_and_doubles_nothing(
    services: Services,
) -> None:
    event = Factory().event("users.updated")
    body = encode(event)
    settings = api_settings(
        services, publish_timeout_seconds=3.0, webhook_database_timeout_seconds=1.0
    )
    async with running_api(settings) as api:

        async def deliver() -> Any:
            return await api.client.post(
                "/webhooks/clever", content=body, headers=signed_headers(body, webhook_id="msg_c")
            )

        warm = encode(Factory().event())
        assert (
            await api.client.post("/webhooks/clever", content=warm, headers=signed_headers(warm))
        ).status_code == 202
        async with commits_hang(services):
            async with asyncio.timeout(GUARD_S):  # before the bound: this hung for ever
                response = await deliver()
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "database_unavailable"
            assert int(response.headers["retry-after"]) > 0
        # The commit finished once the database answered again: the retry is a duplicate.
        async with asyncio.timeout(GUARD_S):
            while (response := await deliver()).status_code != 202:
                assert response.status_code == 503
                await asyncio.sleep(0.2)
        assert response.json()["accepted"] + response.json()["duplicates"] == 1
        await api.app.state.ingestor.drain()
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, {event["id"]})
    assert len(published) == 1


async def test_a_full_queue_refuses_at_once_and_an_expired_job_fails_only_itself(
    services: Services,
) -> None:
    """Behind a batch hung at COMMIT: a request beyond the queue's bound is refused at once; a
    queued one is answered at its deadline, blamed on the database (what it waited behind); and
    the request queued after it is accepted once the database answers, not failed with it."""
    factory = Factory()
    first, queued, refused, later = (factory.event() for _ in range(4))
    async with door(services, timeout=2.0, database_timeout=GUARD_S, max_queued_events=1) as ing:
        async with commits_hang(services) as admin:
            hung = asyncio.create_task(ing.ingest(_parsed(first), _delivery("first")))
            # Its batch waits at COMMIT (as does the probe).
            await _until(lambda: _stalled_commits_over(admin, 1))
            waiting = asyncio.create_task(ing.ingest(_parsed(queued), _delivery("queued")))
            await _until(lambda: ing.queued_events)

            with pytest.raises(Unavailable) as full:
                await asyncio.wait_for(ing.ingest(_parsed(refused), _delivery("no")), GUARD_S)
            assert full.value.error == "overloaded"

            with pytest.raises(Unavailable) as expired:
                await asyncio.wait_for(waiting, GUARD_S)
            assert expired.value.error == "database_unavailable"
            assert ing.queued_events == 0

            after: asyncio.Task[IngestResult] = asyncio.create_task(
                ing.ingest(_parsed(later), _delivery("later"))
            )
            await _until(lambda: ing.queued_events)
        # The database answers again: the hung commit completes, the later request goes through.
        assert (await asyncio.wait_for(hung, GUARD_S)).accepted == 1
        assert (await asyncio.wait_for(after, GUARD_S)).accepted == 1
    ids = {e["id"] for e in (first, queued, refused, later)}
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, ids)
    assert sorted(p.event_id for p in published) == sorted([first["id"], later["id"]])


async def test_a_claim_held_up_by_a_send_kafka_does_not_acknowledge_blames_kafka(
    services: Services,
) -> None:
    """The sender retries while the first delivery's send waits for a paused broker: the retry's
    claim waits on the first batch's row lock until its own database bound. That is Kafka's
    stall, not the database's, and the answer says so."""
    if services.kafka is None:
        pytest.skip("pausing the broker needs the project's own broker")
    event = Factory().event()
    async with door(services, batches=2, timeout=4.0, database_timeout=0.5) as ing:
        os.kill(services.kafka.pid, signal.SIGSTOP)
        try:
            first = asyncio.create_task(ing.ingest(_parsed(event), _delivery("one")))
            await _until(lambda: ing.inflight)  # claimed, sent, waiting for the broker
            with pytest.raises(Unavailable) as retried:
                await asyncio.wait_for(ing.ingest(_parsed(event), _delivery("two")), GUARD_S)
            assert retried.value.error == "kafka_unavailable"
            with pytest.raises(Unavailable) as original:
                await asyncio.wait_for(first, GUARD_S)
            assert original.value.error == "kafka_unavailable"
        finally:
            os.kill(services.kafka.pid, signal.SIGCONT)
        async with asyncio.timeout(60):
            while True:
                try:
                    await ing.ingest(_parsed(event), _delivery("three"))
                    break
                except Unavailable:
                    await asyncio.sleep(0.5)
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, {event["id"]})
    assert len(published) == 1
