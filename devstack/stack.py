"""`roster dev`: the whole local stack in the foreground.

Starts what is not configured (embedded PostgreSQL, the local Kafka broker), migrates, then runs the
API, the consumer, the outbox relay and the Events API poller as child processes. The poller reads
the `ROSTER_CLEVER_*` settings like anywhere else and idles without tokens; `--simulate` points it
at a simulated Clever (`roster simulate`, devstack/simulated.py).

Ctrl-C or SIGTERM stops everything in
reverse order; the children also die with this process if it is killed outright (see
devstack/process.py).

The children get every setting they need explicitly (database URL, broker, dev secret and token):
no process falls back to the local stack by itself, so one started outside `roster dev` without
them stops at start-up instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devstack.credentials import load_or_create
from devstack.kafka import LocalKafka, free_port
from devstack.postgres import LocalPostgres
from devstack.process import (
    ManagedProcess,
    StopRequested,
    ignore_stop_signals,
    raise_on_stop_signals,
    wait_for,
)
from devstack.simulated import SIMULATE_ARGS, SimulatedFeed, simulator_settings
from service.paths import project_root
from service.settings import Settings


def local_home() -> Path:
    """`ROSTER_HOME`, or `.local/` in the checkout: ignored by git, survives restarts."""
    configured = os.environ.get("ROSTER_HOME")
    return Path(configured).resolve() if configured else project_root() / ".local"


def _say(line: str) -> None:
    print(f"roster dev: {line}", flush=True)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback URL)
            return bool(response.status == 200)
    except OSError:
        return False


def _clever_source(env: dict[str, str]) -> str:
    """Where the poller gets its districts, for the banner (never a token or secret)."""
    if env.get("ROSTER_CLEVER_CLIENT_ID"):
        return (
            f"districts discovered from {env.get('ROSTER_CLEVER_OAUTH_URL', 'https://clever.com')}"
        )
    if env.get("ROSTER_CLEVER_DISTRICT_TOKENS"):
        return "district tokens given by hand"
    return "no credentials or tokens: idle"


def run_dev_stack(settings: Settings, *, simulate: bool = False) -> int:
    """Runs until interrupted; returns the exit code (0 after an orderly stop)."""
    raise_on_stop_signals()
    home = local_home()
    started: list[ManagedProcess] = []
    code = 0
    try:
        env = dict(os.environ)
        if settings.database_url is None:
            t0 = time.monotonic()
            postgres = LocalPostgres(home)
            started.append(postgres.start())
            env["ROSTER_DATABASE_URL"] = postgres.url()
            _say(f"PostgreSQL ready in {time.monotonic() - t0:.1f}s (data in {postgres.data_dir})")
        if settings.kafka_bootstrap_servers is None:
            t0 = time.monotonic()
            kafka = LocalKafka(home, settings.local_kafka_port)
            started.append(kafka.start())
            _say(f"Kafka ready in {time.monotonic() - t0:.1f}s on {kafka.bootstrap_servers}")
            env["ROSTER_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
            # A single broker holds one copy whatever the cluster default says.
            env.setdefault("ROSTER_KAFKA_REPLICATION_FACTOR", "1")
        # The local API documents itself unless told otherwise (off by default elsewhere).
        docs = settings.api_docs or "ROSTER_API_DOCS" not in os.environ
        env["ROSTER_API_DOCS"] = str(docs).lower()
        creds = load_or_create(home)
        if not settings.webhook_secrets:
            env["ROSTER_WEBHOOK_SECRETS"] = creds.webhook_secret
        if settings.admin_token is None:
            env["ROSTER_ADMIN_TOKEN"] = creds.admin_token

        python = [sys.executable, "-m", "service"]
        feed: SimulatedFeed | None = None
        if simulate:
            sim_base = f"http://127.0.0.1:{free_port()}"
            port = sim_base.rsplit(":", 1)[1]
            sim = ManagedProcess(
                "simulator",
                [*python, "simulate", "--port", port, *SIMULATE_ARGS],
                env=env,
                cwd=project_root(),
            )
            started.append(sim)
            wait_for(lambda: _http_ok(f"{sim_base}/sim/"), timeout=60, what="simulator", alive=sim)
            env |= simulator_settings(sim_base)
            # A second between polls, so a change in the simulator shows within seconds.
            env.setdefault("ROSTER_POLL_INTERVAL_SECONDS", "1")
        subprocess.run([*python, "migrate"], env=env, check=True, cwd=project_root())
        api = ManagedProcess("api", [*python, "api"], env=env, cwd=project_root())
        started.append(api)
        started.append(
            ManagedProcess("consumer", [*python, "consume"], env=env, cwd=project_root())
        )
        started.append(ManagedProcess("relay", [*python, "relay"], env=env, cwd=project_root()))
        started.append(ManagedProcess("poller", [*python, "poll"], env=env, cwd=project_root()))
        base = f"http://{settings.http_host}:{settings.http_port}"
        wait_for(lambda: _http_ok(f"{base}/healthz"), timeout=60, what="API", alive=api)

        _say("up. Ctrl-C stops everything.")
        _say(f"  API             {base}" + (f"  (docs {base}/docs)" if docs else ""))
        _say(f"  webhook         POST {base}/webhooks/clever")
        _say(f"  health          {base}/healthz  {base}/readyz  {base}/metrics")
        if settings.consumer_metrics_port:
            _say(
                f"  consumer        http://{settings.http_host}:"
                f"{settings.consumer_metrics_port}/metrics"
            )
        if settings.relay_metrics_port:
            _say(
                f"  relay           http://{settings.http_host}:"
                f"{settings.relay_metrics_port}/metrics"
            )
        if settings.poller_metrics_port:
            _say(
                f"  poller          http://{settings.http_host}:"
                f"{settings.poller_metrics_port}/metrics  (Clever: {_clever_source(env)})"
            )
        _say(f"  Kafka           {env['ROSTER_KAFKA_BOOTSTRAP_SERVERS']}")
        if not settings.webhook_secrets:
            _say(f"  webhook secret  {creds.webhook_secret}  (dev only)")
        if settings.admin_token is None:
            _say(f"  admin token     {creds.admin_token}  (dev only)")

        if simulate:
            feed = SimulatedFeed(sim_base, base, env["ROSTER_ADMIN_TOKEN"], _say)
            feed.start()
        while True:
            if feed is not None:
                feed.tick()
            for proc in started:
                if not proc.running():
                    _say(f"{proc.name} exited with code {proc.popen.returncode}; stopping")
                    return 1
            time.sleep(0.2)
    except StopRequested as stop:
        _say(f"{stop} received; stopping")
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        _say(f"failed: {exc}")
        code = 1
    finally:
        ignore_stop_signals()
        for proc in reversed(started):
            proc.stop()
        if started:
            _say("stopped " + ", ".join(proc.name for proc in reversed(started)))
    return code
