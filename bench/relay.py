"""Outbox relay: the rate it drains a backlog, whether it keeps up with 5,000 changes/s, and the
latency from a writer's commit to a subscriber's receipt when the relay is idle.

    .venv/bin/python -m bench.relay [--backlog 50000] [--rate 5000] [--seconds 20]

Starts its own broker and database and runs `roster relay` as its own process; this script is the
writer (appending to the outbox as the consumer does) and the subscriber. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.procstat import loop_seconds
from schemas.roster_changes import CHANGES_TOPIC
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.db.uow import UnitOfWork
from service.kafka.topics import ensure_topics
from service.outbox import store
from service.outbox.store import Outgoing
from service.paths import project_root
from service.settings import load_settings
from tests.support.services import session_services


def _messages(n: int, district: str) -> list[Outgoing]:
    out = []
    for _ in range(n):
        sid = uuid.uuid4().hex[:24]
        data = {
            "id": sid,
            "district_id": district,
            "source_event_id": uuid.uuid4().hex[:24],
            "sis_id": "123456",
            "name": {"first": "Ada", "middle": "B", "last": "Lovelace"},
            "school_ids": [uuid.uuid4().hex[:24]],
            "grade": "4",
            "primary_school_id": None,
            "deleted": False,
            "last_modified": "2026-11-29T10:00:00+00:00",
        }
        out.append(Outgoing(CHANGES_TOPIC, sid, "roster.student.upserted", district, data))
    return out


async def _append(engine: AsyncEngine, messages: list[Outgoing]) -> float:
    async with UnitOfWork(engine) as uow:
        await store.append(uow.connection, messages)
        await uow.commit()
    return time.perf_counter()


async def _backlog(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
            ).scalar_one()
        )


async def _fill(engine: AsyncEngine, n: int) -> None:
    for start in range(0, n, 2000):
        await _append(engine, _messages(min(2000, n - start), "bench-backlog"))


async def _drain(engine: AsyncEngine, n: int) -> float:
    started = time.perf_counter()
    while await _backlog(engine):  # noqa: ASYNC110 (polling the database)
        await asyncio.sleep(0.05)
    return n / (time.perf_counter() - started)


async def _sustained(engine: AsyncEngine, rate: float, seconds: float) -> tuple[int, int, int]:
    """Appends `rate` messages/s in 10 commits a second; returns (max backlog, final backlog,
    backlog one second after the writer stopped)."""
    per_tick = int(rate / 10)
    started = time.perf_counter()
    worst = 0
    tick = 0
    while time.perf_counter() - started < seconds:
        await _append(engine, _messages(per_tick, "bench-steady"))
        tick += 1
        if tick % 10 == 0:
            worst = max(worst, await _backlog(engine))
        delay = started + tick / 10 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    final = await _backlog(engine)
    await asyncio.sleep(1.0)
    return worst, final, await _backlog(engine)


async def _idle_latency(engine: AsyncEngine, bootstrap: str, samples: int) -> list[float]:
    consumer = AIOKafkaConsumer(
        CHANGES_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="latest"
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for tp in consumer.assignment():
            await consumer.seek_to_end(tp)
            await consumer.position(tp)
        latencies = []
        for _ in range(samples):
            await asyncio.sleep(0.3)  # let the relay go idle
            (message,) = _messages(1, "bench-idle")
            committed = await _append(engine, [message])
            got = None
            while got is None:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for r in records:
                        if r.key.decode() == message.key:
                            got = time.perf_counter()
            latencies.append(got - committed)
        return sorted(latencies)
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()

    with session_services() as services:
        upgrade(services.database_url)
        asyncio.run(ensure_topics(services.kafka_bootstrap))
        engine_url = services.database_url

        async def run_all() -> None:
            engine = make_engine(engine_url, pool_size=2)
            env = dict(os.environ) | {
                "ROSTER_DATABASE_URL": services.database_url,
                "ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
                "ROSTER_RELAY_METRICS_PORT": "0",
                "ROSTER_LOG_LEVEL": "WARNING",
            }
            try:
                await _fill(engine, args.backlog)
                relay = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
                    [sys.executable, "-m", "service", "relay"], env=env, cwd=project_root()
                )
                try:
                    rate = await _drain(engine, args.backlog)
                    print(
                        f"machine: {os.cpu_count()} cores, speed check {loop_seconds():.2f} s; "
                        f"1 relay process, rounds of up to "
                        f"{load_settings().relay_batch}; broker and database on this machine\n"
                    )
                    print(f"backlog of {args.backlog:,} drained         {rate:>9,.0f} messages/s")
                    worst, final, after = await _sustained(engine, args.rate, args.seconds)
                    print(
                        f"{args.rate:,.0f} changes/s for {args.seconds:.0f} s: backlog at most "
                        f"{worst:,} (sampled each second), {final:,} when the writer stopped, "
                        f"{after:,} one second later"
                    )
                    lat = await _idle_latency(engine, services.kafka_bootstrap, 40)

                    def p(q: float) -> float:
                        return float(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000)

                    print(
                        f"idle relay, commit to subscriber receipt: p50 {p(0.5):.0f} ms  "
                        f"p99 {p(0.99):.0f} ms  max {lat[-1] * 1000:.0f} ms (n={len(lat)})"
                    )
                finally:
                    relay.terminate()
                    relay.wait(timeout=60)
            finally:
                await engine.dispose()

        asyncio.run(run_all())


if __name__ == "__main__":
    main()
