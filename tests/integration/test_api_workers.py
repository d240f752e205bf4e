"""`roster api` with several worker processes (ROSTER_HTTP_WORKERS): one port, the metrics of all
workers in every scrape, and nothing left behind when it stops."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from devstack.kafka import free_port
from service.kafka.topics import CLEVER_EVENTS
from tests.support.factory import Factory
from tests.support.pipeline import roster_process
from tests.support.services import Services
from tests.support.topic import read_topic
from tests.support.webhook import ADMIN_TOKEN, SECRET, encode, signed_headers

WORKERS = 2


def _accepted(metrics: str) -> float:
    prefix = 'roster_webhook_events_total{outcome="accepted"} '
    return sum(
        float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix)
    )


def _children(pid: int) -> set[int]:
    """The worker processes of `pid`. Not multiprocessing's resource tracker, which the spawn
    start method also runs as a child: it ends by itself once the supervisor has exited, a few
    milliseconds later, and is no worker."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"resource_tracker" not in cmdline:
                found.add(int(entry.name))
    return found


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for init (here, not always PID 1) to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_workers_share_the_port_and_report_their_metrics_together(
    services: Services, tmp_path: Path
) -> None:
    port = free_port()
    proc = roster_process(
        services,
        "api",
        ROSTER_HTTP_WORKERS=str(WORKERS),
        ROSTER_HTTP_PORT=str(port),
        ROSTER_WEBHOOK_SECRETS=SECRET,
        ROSTER_ADMIN_TOKEN=ADMIN_TOKEN,
        TMPDIR=str(tmp_path),  # where the workers' metric files go
    )
    base = f"http://127.0.0.1:{port}"
    factory = Factory()
    events = [factory.event("users.updated") for _ in range(60)]
    try:
        async with asyncio.timeout(60):
            while True:
                try:
                    async with httpx.AsyncClient() as client:
                        if (await client.get(f"{base}/readyz")).status_code == 200:
                            break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, "roster api exited"
                await asyncio.sleep(0.2)
        assert len(_entries(tmp_path)) == 1  # the run's metrics directory
        workers = _children(proc.pid)
        assert len(workers) >= WORKERS

        async def deliver(event: dict[str, object]) -> int:
            body = encode(event)
            # A connection per request: the kernel hands connections to both workers.
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"{base}/webhooks/clever", content=body, headers=signed_headers(body)
                )
            return answer.status_code

        codes = await asyncio.gather(*[deliver(e) for e in events])
        assert codes == [202] * len(events)

        # Each scrape is answered by whichever worker takes the connection; every one of them
        # reports the events both workers accepted.
        scrapes = []
        for _ in range(10):
            async with httpx.AsyncClient() as client:
                scrapes.append(_accepted((await client.get(f"{base}/metrics")).text))
        assert scrapes == [float(len(events))] * 10
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    # The supervisor waits for its workers before it exits.
    assert not any(_alive(w) for w in workers), "a worker outlived `roster api`"
    assert _entries(tmp_path) == []  # the metrics directory is removed

    ids = {str(e["id"]) for e in events}
    published = await read_topic(services.kafka_bootstrap, CLEVER_EVENTS.name, ids)
    assert sorted(p.event_id for p in published) == sorted(ids)
