"""`roster dev` as a user runs it: it comes up healthy and ready, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def _start(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    # The broker's controller takes the next port: a pair both free, outside the range the
    # kernel hands to outgoing connections (this test's own polling among them).
    http_port, kafka_port, metrics_port = free_port(), free_port(2), free_port()
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
    }
    env |= {
        "ROSTER_HOME": str(home),
        "ROSTER_HTTP_PORT": str(http_port),
        "ROSTER_CONSUMER_METRICS_PORT": str(metrics_port),
        "ROSTER_LOCAL_KAFKA_PORT": str(kafka_port),
    }
    # No terminal: output to a file, as when started in the background.
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "dev"],
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
        assert "service relay" in names
        output = log.read_text()
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
        assert "stopped relay, consumer, api, kafka, postgres" in log.read_text()
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
