"""Instructions per page event of the webhook door's own work, counted by valgrind.

    .venv/bin/python -m bench.instructions [--small 10] [--large 80]

On a shared machine the wall-clock figures of `bench.webhook` move by 20% or more from run to
run, so a change worth 5% cannot be told from noise there. This counts instead: it parses and
ingests pages of 100 events (the door's parse, claim and publish; no HTTP) against a real broker
and database, under valgrind, once with `--small` pages and once with `--large`, and prints the
difference per event, so start-up and imports cancel out. Two counts of the same code agree
within about 1%.

What it does not see: the kernel (system calls), the broker and PostgreSQL (other processes), and
cache misses. Large copies count high: glibc copies with `rep movsb`, which valgrind counts once
per byte, although the processor moves tens of bytes per cycle. Needs valgrind
(`apt-get install valgrind`). Not a test: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time

from bench.webhook import _pages  # the benchmark's own page shape
from service.db.driver_pool import DriverPool, driver_dsn
from service.db.migrate import upgrade
from service.gc_tuning import tune_gc
from service.kafka.gateway import KafkaGateway
from service.kafka.topics import ensure_topics
from service.paths import project_root
from service.webhooks.delivery import Delivery, now_utc
from service.webhooks.ingest import Ingestor
from service.webhooks.parse import parse_body
from tests.support.factory import Factory
from tests.support.services import session_services

_WARM = 16  # pages every count parses and ingests first, so both counts warm up alike
_CONCURRENT = 8  # pages in flight at once, as 8 connections would send them
_TRACE = "00-" + "1" * 32 + "-" + "1" * 16 + "-01"


async def _inner(pages: int, built: int, database_url: str, bootstrap: str) -> None:
    factory = Factory(seed=time.time_ns())  # new event ids for every count
    # Both counts build `built` pages (building them then cancels out) and use the first ones.
    bodies = _pages(factory, built)[: _WARM + pages]
    kafka = KafkaGateway(bootstrap)
    kafka.start()
    await kafka.connected.wait()
    pool = DriverPool(driver_dsn(database_url), size=5)
    ingestor = Ingestor(pool, kafka, timeout=60)
    tune_gc()
    slots = asyncio.Semaphore(_CONCURRENT)

    async def one(body: bytes) -> None:
        async with slots:
            events = parse_body(body, max_events=10_000)
            await ingestor.ingest(events, Delivery("webhook", "bench", _TRACE, now_utc()))

    await asyncio.gather(*(one(body) for body in bodies))
    await ingestor.drain()
    await kafka.stop()
    await pool.close()


def _count(pages: int, built: int, database_url: str, bootstrap: str) -> int:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            "--inner",
            str(pages),
            "--built",
            str(built),
            "--database-url",
            database_url,
            "--bootstrap",
            bootstrap,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=project_root(),
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10, help="pages in the first count")
    parser.add_argument("--large", type=int, default=80, help="pages in the second count")
    parser.add_argument("--repeat", type=int, default=2, help="counts of each size")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--built", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:
        asyncio.run(_inner(args.inner, args.built, args.database_url, args.bootstrap))
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench.instructions needs valgrind (apt-get install valgrind)")
    if args.large <= args.small:
        sys.exit("--large must be more pages than --small")

    built = _WARM + args.large
    with session_services() as services:
        upgrade(services.database_url)
        asyncio.run(ensure_topics(services.kafka_bootstrap))
        per_event = []
        for _ in range(args.repeat):
            small = _count(args.small, built, services.database_url, services.kafka_bootstrap)
            large = _count(args.large, built, services.database_url, services.kafka_bootstrap)
            per_event.append((large - small) / ((args.large - args.small) * 100))
        print(
            "parse and ingest, pages of 100 (no HTTP): "
            + ", ".join(f"{count:,.0f}" for count in per_event)
            + " instructions per event"
        )


if __name__ == "__main__":
    main()
