"""`roster dev` as a user runs it: it comes up healthy and ready, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from devstack.kafka import free_port
from service.paths import project_root


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Until the banner is printed (after its own health check) and /readyz answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "roster dev exited early"
        if "Ctrl-C stops everything" in log.read_text() and _status(f"{base}/readyz") == 200:
            return
        time.sleep(0.25)
    raise AssertionError("roster dev did not become ready")


@pytest.fixture
def dev_home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _start(
    home: Path, log: Path, *extra: str, clever: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    # The broker's controller takes the next port: a pair both free, outside the range the
    # kernel hands to outgoing connections (this test's own polling among them).
    http_port, kafka_port, metrics_port = free_port(), free_port(2), free_port()
    relay_port, poller_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "ROSTER_DATABASE_URL",
            "ROSTER_KAFKA_BOOTSTRAP_SERVERS",
            "ROSTER_WEBHOOK_SECRETS",
            "ROSTER_ADMIN_TOKEN",
        )
        and not k.startswith("ROSTER_CLEVER_")
    } | (clever or {})
    env |= {
        "ROSTER_HOME": str(home),
        "ROSTER_HTTP_PORT": str(http_port),
        "ROSTER_CONSUMER_METRICS_PORT": str(metrics_port),
        "ROSTER_RELAY_METRICS_PORT": str(relay_port),
        "ROSTER_POLLER_METRICS_PORT": str(poller_port),
        "ROSTER_LOCAL_KAFKA_PORT": str(kafka_port),
    }
    # No terminal: output to a file, as when started in the background.
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "dev", *extra],
            env=env,
            cwd=project_root(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, f"http://127.0.0.1:{http_port}"


def _tree(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _assert_all_gone(procs: list[psutil.Process], timeout: float = 15) -> None:
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    assert alive == [], f"left running: {[p.info if hasattr(p, 'info') else p for p in alive]}"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_dev_stack_ready_then_stops_cleanly(
    dev_home: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    log = tmp_path / "dev.log"
    proc, base = _start(dev_home, log)
    try:
        _wait_ready(base, proc, log)
        assert _status(f"{base}/healthz") == 200
        children = _tree(proc.pid)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "kafka.Kafka" in names and "postgres" in names
        assert "service api" in names and "service consume" in names
        assert "service relay" in names and "service poll" in names
        output = log.read_text()
        # No Clever credentials or tokens: the poller runs and idles.
        assert "(Clever: no credentials or tokens: idle)" in output
        assert "webhook secret  whsec_" in output and "admin token" in output
        consumer_metrics = output.split("consumer        ")[1].split()[0]
        with urllib.request.urlopen(consumer_metrics, timeout=5) as response:  # noqa: S310
            series = response.read().decode()
        for name in (
            "roster_events_applied_total",
            "roster_apply_latency_seconds",
            "roster_consumer_batch_size",
            "roster_events_dead_lettered_total",
        ):
            assert name in series
        os.killpg(proc.pid, stop_signal)  # what a terminal's Ctrl-C does to its foreground group
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        _assert_all_gone(children)
        assert "stopped poller, relay, consumer, api, kafka, postgres" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_dev_stack_children_die_with_a_killed_supervisor(dev_home: Path, tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    proc, base = _start(dev_home, log)
    try:
        _wait_ready(base, proc, log)
        children = _tree(proc.pid)
        proc.kill()
        proc.wait()
        _assert_all_gone(children, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_dev_stack_data_survives_a_restart(dev_home: Path, tmp_path: Path) -> None:
    """The second start reuses the formatted broker storage and the initialised database."""
    for _ in range(2):
        log = tmp_path / "dev.log"
        proc, base = _start(dev_home, log)
        try:
            _wait_ready(base, proc, log)
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert (dev_home / "postgres" / "data" / "PG_VERSION").exists()
    assert (dev_home / "kafka" / "data" / "meta.properties").exists()
    assert (dev_home / "dev-credentials.json").exists()


def _admin_get(base: str, path: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310
        f"{base}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def test_dev_stack_simulate_flows_a_district_in_and_opens_alerts(
    dev_home: Path, tmp_path: Path
) -> None:
    """`roster dev --simulate`: the poller discovers the simulated districts, backfills and polls
    them, and the students the simulator puts in two schools open single-school alerts."""
    log = tmp_path / "dev.log"
    proc, base = _start(dev_home, log, "--simulate")
    try:
        _wait_ready(base, proc, log)
        output = log.read_text()
        token = output.split("admin token     ")[1].split()[0]
        deadline = time.monotonic() + 120
        districts: list[dict[str, Any]] = []
        opened: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            districts = _admin_get(base, "/v1/districts", token)["items"]
            opened = _admin_get(base, "/v1/alerts?status=open", token)["items"]
            polled = [d for d in districts if d["sync_state"] == "polling" and d["cursor_event_id"]]
            if len(polled) == 2 and {a["district_id"] for a in opened} == {
                d["id"] for d in districts
            }:
                break
            time.sleep(1)
        else:
            raise AssertionError(f"districts {districts}, {len(opened)} open alerts")
        assert all(len(a["school_ids"]) >= 2 for a in opened)
        assert all(d["token_source"] == "discovered" for d in districts)
        shown = log.read_text()
        assert "simulated Clever at http://127.0.0.1:" in shown
        assert "open single-school alerts" in shown
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "stopped poller, relay, consumer, api, simulator, kafka, postgres" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
