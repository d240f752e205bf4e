"""The pull doors end to end: a first-contact backfill of a large simulated district into an empty
database, then the poller's steady state.

    .venv/bin/python -m bench.pull [--students 50000] [--schools 60] [--sections 2500]
                                   [--changes 100] [--change-every 0.3]

Starts its own broker and database, then `roster simulate`, `roster api`, `roster consume` and
`roster poll` as processes of their own (as deployed), on loopback. Prints figures; nothing passes
or fails.

- Backfill: from the poller's start to the last synthetic event applied. The backfill's own row
  gives when it started and finished reading and publishing; the tail after it is the consumer
  catching up. Each process's CPU seconds over the run show where the time went (the simulator
  serving pages, the poller reading and publishing, the consumer applying, PostgreSQL, Kafka).
- Steady state: with a 1 s poll interval, a student changed in the simulator, then
  `GET /v1/students/{id}` read until its `last_modified` moves; the time from the change to
  the first read that shows it, per change (p50, p99, max).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping

import httpx
from sqlalchemy import text

from bench.procstat import loop_seconds, tree_cpu_seconds
from devstack.kafka import free_port
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.paths import project_root
from tests.support.services import Services, session_services
from tests.support.webhook import ADMIN_TOKEN, SECRET

_SETTLED = text(
    "SELECT count(*) FROM event_log "
    "WHERE district_id = :d AND source = 'backfill' AND status IN ('applied', 'stale')"
)
_BACKFILL = text(
    "SELECT status, counts, started_at, finished_at, requested_at FROM backfills "
    "WHERE district_id = :d ORDER BY requested_at DESC LIMIT 1"
)


def _process(args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        env=dict(os.environ) | dict(env),
        cwd=project_root(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_http(client: httpx.AsyncClient, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def _steady_state(
    client: httpx.AsyncClient, sim: str, api: str, district: str, changes: int, every: float
) -> list[float]:
    """Per change, seconds from the simulator's answer to the first read of the new state."""
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    latencies: list[float] = []

    async def watch(student_id: str, before: str | None, made: float) -> None:
        deadline = made + 30
        while time.monotonic() < deadline:
            answer = await client.get(f"{api}/v1/students/{student_id}", headers=admin)
            if answer.status_code == 200 and answer.json()["last_modified"] != before:
                latencies.append(time.monotonic() - made)
                return
            await asyncio.sleep(0.02)
        latencies.append(float("inf"))

    students = (await client.get(f"{sim}/sim/truth", params={"district_id": district})).json()
    live = sorted(s for s, t in students["students"].items() if not t["deleted"])
    watchers = []
    for i in range(changes):
        student_id = live[(i * 7919) % len(live)]
        before = (await client.get(f"{api}/v1/students/{student_id}", headers=admin)).json()
        body = {
            "change": "update_student",
            "district_id": district,
            "args": {"student_id": student_id},
        }
        await client.post(f"{sim}/sim/changes", json=body)
        watchers.append(
            asyncio.create_task(watch(student_id, before.get("last_modified"), time.monotonic()))
        )
        await asyncio.sleep(every)
    await asyncio.gather(*watchers)
    return latencies


async def _run(services: Services, opts: argparse.Namespace) -> None:
    engine = make_engine(services.database_url, pool_size=2)
    sim_port, api_port = free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    api = f"http://127.0.0.1:{api_port}"
    base_env = {
        "ROSTER_DATABASE_URL": services.database_url,
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "ROSTER_WEBHOOK_SECRETS": SECRET,
        "ROSTER_ADMIN_TOKEN": ADMIN_TOKEN,
        "ROSTER_HTTP_PORT": str(api_port),
        "ROSTER_LOG_LEVEL": "WARNING",
        "ROSTER_CONSUMER_METRICS_PORT": "0",
        "ROSTER_POLLER_METRICS_PORT": "0",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    cpu: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            t = time.monotonic()
            procs["simulator"] = _process(
                [
                    "simulate",
                    "--port",
                    str(sim_port),
                    "--seed",
                    str(int(time.time())),
                    "--districts",
                    "1",
                    "--schools",
                    str(opts.schools),
                    "--students",
                    str(opts.students),
                    "--sections",
                    str(opts.sections),
                ],
                base_env,
            )
            await _wait_http(client, f"{sim}/sim/", timeout=120)
            info = (await client.get(f"{sim}/sim/")).json()
            (district,) = [d["id"] for d in info["districts"]]
            print(f"simulator seeded in {time.monotonic() - t:.1f} s (process start included)")
            clever = {
                "ROSTER_CLEVER_API_URL": sim,
                "ROSTER_CLEVER_OAUTH_URL": sim,
                "ROSTER_CLEVER_CLIENT_ID": info["client_id"],
                "ROSTER_CLEVER_CLIENT_SECRET": info["client_secret"],
                "ROSTER_CLEVER_PAGE_LIMIT": "10000",
                "ROSTER_POLL_INTERVAL_SECONDS": "1",
            }
            procs["api"] = _process(["api"], base_env)
            procs["consumer"] = _process(["consume"], base_env)
            await _wait_http(client, f"{api}/readyz")
            await asyncio.sleep(3)  # the consumer joins its group before the first event
            for name, proc in procs.items():
                cpu[name] = tree_cpu_seconds(proc.pid)
            db_cpu0 = _service_cpu(services)
            started = time.monotonic()
            procs["poller"] = _process(["poll"], base_env | clever)
            cpu["poller"] = 0.0

            published = None
            finished_at = None
            async with engine.connect() as conn:
                while True:
                    await asyncio.sleep(0.25)
                    row = (await conn.execute(_BACKFILL, {"d": district})).first()
                    settled = int((await conn.execute(_SETTLED, {"d": district})).scalar_one())
                    await conn.commit()
                    if row is not None and row.status != "running" and published is None:
                        published = sum(int(c["published"]) for c in row.counts.values())
                        finished_at = time.monotonic()
                        read = sum(int(c["read"]) for c in row.counts.values())
                        took = (row.finished_at - row.started_at).total_seconds()
                        print(
                            f"backfill {row.status}: {read:,} records read, {published:,} events "
                            f"published in {took:.1f} s (its row: started to finished)"
                        )
                    if published is not None and settled >= published:
                        break
                    if time.monotonic() - started > 600:
                        raise SystemExit(f"not applied after 600 s ({settled} settled)")
            done = time.monotonic()
            total = done - started
            assert finished_at is not None
            print(
                f"end to end: {total:.1f} s from the poller's start to the last event applied "
                f"(backfill done at {finished_at - started:.1f} s, apply tail "
                f"{done - finished_at:.1f} s)"
            )
            used = {name: tree_cpu_seconds(p.pid) - cpu.get(name, 0.0) for name, p in procs.items()}
            used |= {k: v - db_cpu0.get(k, 0.0) for k, v in _service_cpu(services).items()}
            busy = sum(used.values())
            print(f"CPU seconds over those {total:.1f} s (2 cores: {2 * total:.0f} available):")
            for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]):
                print(f"  {name:<10} {seconds:6.1f} s  {100 * seconds / busy:5.1f}% of the work")

            if opts.changes:
                latencies = await _steady_state(
                    client, sim, api, district, opts.changes, opts.change_every
                )
                shown = [v for v in latencies if v != float("inf")]
                print(
                    f"steady state, {len(latencies)} changes one every {opts.change_every} s, "
                    f"poll interval 1 s: change to /v1/students p50 {_pct(shown, 0.5):.2f} s, "
                    f"p99 {_pct(shown, 0.99):.2f} s, max {max(shown):.2f} s, mean "
                    f"{statistics.mean(shown):.2f} s; not shown within 30 s: "
                    f"{len(latencies) - len(shown)}"
                )
        finally:
            for proc in reversed(list(procs.values())):
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            await engine.dispose()


def _service_cpu(services: Services) -> dict[str, float]:
    found: dict[str, float] = {}
    if services.kafka is not None:
        found["kafka"] = tree_cpu_seconds(services.kafka.pid)
    postmaster = services.home / "postgres" / "data" / "postmaster.pid"
    if postmaster.is_file():
        found["postgres"] = tree_cpu_seconds(int(postmaster.read_text().split()[0]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=50_000)
    parser.add_argument("--schools", type=int, default=60)
    parser.add_argument("--sections", type=int, default=2_500)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--change-every", type=float, default=0.3)
    opts = parser.parse_args()
    print(f"machine speed: {loop_seconds():.2f} s for the reference loop (idle: about 0.5 s)")
    with session_services() as services:
        upgrade(services.database_url)
        asyncio.run(_run(services, opts))


if __name__ == "__main__":
    main()
