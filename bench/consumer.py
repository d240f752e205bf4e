"""Roster consumer throughput from a backlog, and receipt-to-commit latency at a steady rate,
beside a raw asyncpg batched upsert of the same rows.

    .venv/bin/python -m bench.consumer [--backlog 50000] [--rate 1000] [--seconds 15]

Starts its own broker and database, runs `roster consume` as its own process. Prints figures;
nothing passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from bench.procstat import loop_seconds, tree_cpu_seconds
from schemas import kafka_headers as h
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.db.tables import event_log
from service.kafka.config import producer_options
from service.kafka.topics import CLEVER_EVENTS, ensure_topics
from service.paths import project_root
from service.settings import load_settings
from tests.support.factory import Factory
from tests.support.services import session_services


def _events(factory: Factory, n: int, districts: int = 100) -> list[dict[str, Any]]:
    ids = [factory.oid() for _ in range(districts)]
    kinds = ["users.updated", "users.updated", "sections.updated", "schools.updated"]
    return [factory.event(kinds[i % 4], ids[i % districts]) for i in range(n)]


async def _publish(bootstrap: str, events: list[dict[str, Any]], rate: float | None) -> None:
    producer = AIOKafkaProducer(**producer_options(bootstrap))
    await producer.start()
    try:
        started = time.perf_counter()
        futures = []
        for i, event in enumerate(events):
            if rate is not None:
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            obj = event["data"]["object"]
            district = obj.get("district", obj["id"])
            futures.append(
                await producer.send(
                    CLEVER_EVENTS.name,
                    key=district.encode(),
                    value=orjson.dumps(event),
                    headers=[
                        (h.EVENT_ID, event["id"].encode()),
                        (h.EVENT_TYPE, event["type"].encode()),
                        (h.SOURCE, b"backfill"),
                        (h.RECEIVED_AT, datetime.now(UTC).isoformat().encode()),
                    ],
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _settled(url: str, ids: list[str]) -> int:
    """Events the consumer settled so far (a cheap count: every event here is the bench's)."""
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(event_log)
                .where(event_log.c.status.in_(("applied", "stale")))
            )
            return min(int(count or 0), len(ids))
    finally:
        await engine.dispose()


async def _wait_settled(url: str, ids: list[str], timeout: float = 600) -> tuple[float, float]:
    """Seconds from the first settled event to the last, and the time the last one settled."""
    first = None
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        count = await _settled(url, ids)
        now = time.perf_counter()
        if count and first is None:
            first = now
        if count >= len(ids):
            return now - (first or now), now
        await asyncio.sleep(0.25)
    raise TimeoutError("consumer did not settle the events in time")


async def _latencies(url: str, ids: list[str]) -> list[float]:
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(event_log.c.received_at, event_log.c.applied_at).where(
                    event_log.c.event_id.in_(ids), event_log.c.applied_at.is_not(None)
                )
            )
            return [(a - r).total_seconds() for r, a in rows]
    finally:
        await engine.dispose()


async def _raw_upsert(url: str, events: list[dict[str, Any]], batch: int) -> float:
    """Rows/s of asyncpg executemany upserts of the same users rows, one transaction per batch."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    base, _, query = dsn.partition("?")
    host = dict(p.split("=", 1) for p in query.split("&") if p).get("host")
    conn = await asyncpg.connect(base, host=host)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS raw_users (id text primary key, "
        "district_id text, data jsonb, version_at timestamptz, version_event text)"
    )
    rows = [
        (
            e["data"]["object"]["id"],
            e["data"]["object"].get("district", ""),
            orjson.dumps(e["data"]["object"]).decode(),
            datetime.now(UTC),
            e["id"],
        )
        for e in events
    ]
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO raw_users VALUES ($1, $2, $3::jsonb, $4, $5) ON CONFLICT (id) DO "
                "UPDATE SET data = excluded.data, version_at = excluded.version_at, "
                "version_event = excluded.version_event",
                rows[i : i + batch],
            )
    elapsed = time.perf_counter() - started
    await conn.close()
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--consumers", type=int, default=1, help="consumer processes (one group)")
    args = parser.parse_args()
    factory = Factory(seed=7)

    with session_services() as services:
        upgrade(services.database_url)
        asyncio.run(ensure_topics(services.kafka_bootstrap))
        backlog = _events(factory, args.backlog)
        asyncio.run(_publish(services.kafka_bootstrap, backlog, None))
        env = dict(os.environ) | {
            "ROSTER_DATABASE_URL": services.database_url,
            "ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
            "ROSTER_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:6]}",
            "ROSTER_CONSUMER_METRICS_PORT": "0",
            "ROSTER_LOG_LEVEL": "WARNING",
        }
        consumers = [
            subprocess.Popen(
                [sys.executable, "-m", "service", "consume"], env=env, cwd=project_root()
            )
            for _ in range(args.consumers)
        ]
        try:
            ids = [e["id"] for e in backlog]
            elapsed, _ = asyncio.run(_wait_settled(services.database_url, ids))
            cpu = sum(tree_cpu_seconds(c.pid) for c in consumers)  # start-up included
            print(
                f"machine: {os.cpu_count()} cores, speed check {loop_seconds():.2f} s; "
                f"consumer: {args.consumers} process(es) of "
                f"{load_settings().consumer_concurrency} batches in flight, batches of up to "
                f"{load_settings().consumer_max_batch}; broker and database on this machine\n"
            )
            print(
                f"backlog of {len(ids):,} events applied      {len(ids) / elapsed:>9,.0f} "
                f"events/s  ({elapsed:.1f} s; consumer CPU {cpu * 1e6 / len(ids):.0f} us/event)",
                flush=True,
            )

            steady = _events(factory, int(args.rate * args.seconds))
            asyncio.run(_publish(services.kafka_bootstrap, steady, args.rate))
            steady_ids = [e["id"] for e in steady]
            asyncio.run(_wait_settled(services.database_url, ids + steady_ids))
            lat = sorted(asyncio.run(_latencies(services.database_url, steady_ids)))

            def p(q: float) -> float:
                return float(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000)

            print(
                f"receipt to commit at {args.rate:,.0f} events/s offered: p50 {p(0.5):.0f} ms  "
                f"p99 {p(0.99):.0f} ms  max {lat[-1] * 1000:.0f} ms  "
                f"(mean {statistics.mean(lat) * 1000:.0f} ms, n={len(lat)})",
                flush=True,
            )
        finally:
            for consumer in consumers:
                consumer.terminate()
            for consumer in consumers:
                consumer.wait(timeout=60)
        raw = asyncio.run(_raw_upsert(services.database_url, backlog, 500))
        print(
            f"raw asyncpg executemany upsert, batches of 500  {raw:>9,.0f} rows/s   "
            f"consumer/raw = {len(backlog) / elapsed / raw:.2f}"
        )


if __name__ == "__main__":
    main()
