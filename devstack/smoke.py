"""What scripts/image runs on the host beside the image (dev only).

`python -m devstack.smoke services HOME ENV_FILE` starts the Maven-fetched Kafka broker and the
embedded PostgreSQL (listening on loopback TCP as well: a container cannot reach the Unix socket)
on free ports under HOME, picks free ports for the processes the script runs from the image, and
writes every `ROSTER_*` setting they need to ENV_FILE (one `NAME=value` a line, as `podman run
--env-file` reads it; the file only appears once both services answer). It then runs until SIGTERM
or SIGINT, stops the broker and the database, and removes HOME. If the script that started it dies
outright, the services die with this process (devstack/process.py).

`python -m devstack.smoke check API_URL [--relay-metrics URL] [--metrics NAME=URL ...]` is the end
to end check: it waits for the API's /readyz, sends one signed webhook event (a student, with the
first of ROSTER_WEBHOOK_SECRETS), waits for GET /v1/events/{id} to say `applied` (with
ROSTER_ADMIN_TOKEN), for the relay to have published the student's roster change, and for each
/metrics URL to answer. Exit code 0 when all of it happened, else 1 with one line saying what did
not.

The secret and token of `services` are random per run: nothing keeps them.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from devstack.kafka import LocalKafka, free_port
from devstack.postgres import LocalPostgres
from devstack.process import (
    ManagedProcess,
    StopRequested,
    ignore_stop_signals,
    raise_on_stop_signals,
)
from service.settings import decode_webhook_secret
from service.webhooks.signature import sign


def _say(line: str) -> None:
    print(f"scripts/image: {line}", file=sys.stderr, flush=True)


def settings_for(kafka: str, database_url: str) -> dict[str, str]:
    """Every setting the image's processes are given: the services, fresh credentials, and a free
    loopback port for each listener (the containers share the host's network)."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    return {
        "ROSTER_DATABASE_URL": database_url,
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "ROSTER_KAFKA_REPLICATION_FACTOR": "1",
        "ROSTER_WEBHOOK_SECRETS": secret,
        "ROSTER_ADMIN_TOKEN": secrets.token_urlsafe(24),
        "ROSTER_HTTP_HOST": "127.0.0.1",
        "ROSTER_HTTP_PORT": str(free_port()),
        "ROSTER_CONSUMER_METRICS_PORT": str(free_port()),
        "ROSTER_RELAY_METRICS_PORT": str(free_port()),
        "ROSTER_POLLER_METRICS_PORT": str(free_port()),
        # No Clever here: with no token the poller has no district to poll, and should it try,
        # this address answers nothing rather than reaching out.
        "ROSTER_CLEVER_API_URL": "http://127.0.0.1:9",
        "ROSTER_CLEVER_OAUTH_URL": "http://127.0.0.1:9",
    }


def services(home: Path, env_file: Path) -> int:
    raise_on_stop_signals()
    started: list[ManagedProcess] = []
    code = 0
    try:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        t0 = time.monotonic()
        postgres = LocalPostgres(home, tcp_port=free_port())
        started.append(postgres.start())
        port = free_port(consecutive=2)
        kafka = LocalKafka(home, port, controller_port=port + 1)
        started.append(kafka.start())
        _say(
            f"local PostgreSQL on 127.0.0.1:{postgres.tcp_port} and Kafka on "
            f"{kafka.bootstrap_servers} ready in {time.monotonic() - t0:.1f}s"
        )
        values = settings_for(kafka.bootstrap_servers, postgres.tcp_url())
        partial = env_file.with_name(env_file.name + ".partial")
        partial.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
        partial.replace(env_file)  # whole or absent: the script waits for it to appear
        while all(proc.running() for proc in started):
            time.sleep(0.2)
        _say("the local broker or database exited on its own")
        code = 1
    except StopRequested:
        pass
    except (RuntimeError, TimeoutError, OSError) as exc:
        _say(f"the local broker or database failed: {exc}")
        code = 1
    finally:
        ignore_stop_signals()
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(home, ignore_errors=True)
    return code


class CheckFailed(Exception):
    pass


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int | None, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback URLs)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return None, str(exc).encode()


def _wait(what: str, check: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise CheckFailed(f"{what}: not within {seconds:.0f}s")


def _student_event() -> tuple[str, bytes]:
    event_id = uuid.uuid4().hex[:24]
    body = orjson.dumps(
        {
            "id": event_id,
            "type": "users.created",
            "created": "2026-11-29T10:00:00Z",
            "data": {
                "object": {
                    "id": uuid.uuid4().hex[:24],
                    "district": uuid.uuid4().hex[:24],
                    "name": {"first": "Smoke", "last": "Test"},
                    "roles": {"student": {"schools": [uuid.uuid4().hex[:24]], "sis_id": "s1"}},
                    "last_modified": "2026-11-29T10:00:00Z",
                }
            },
        }
    )
    return event_id, body


def check(api: str, relay_metrics: str | None, metrics: dict[str, str]) -> None:
    """Raises CheckFailed naming the first step that did not happen."""
    secret = os.environ["ROSTER_WEBHOOK_SECRETS"].split()[0]
    token = os.environ["ROSTER_ADMIN_TOKEN"]
    last: dict[str, tuple[int | None, bytes]] = {}

    def ready() -> bool:
        last["readyz"] = _get(f"{api}/readyz")
        return last["readyz"][0] == 200

    try:
        _wait(f"the API's {api}/readyz answering 200", ready)
    except CheckFailed as exc:
        raise CheckFailed(f"{exc} (last answer: {last.get('readyz')})") from None
    _say(f"the API is ready ({api}/readyz 200)")

    event_id, body = _student_event()
    webhook_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    request = urllib.request.Request(  # noqa: S310 (a loopback URL)
        f"{api}/webhooks/clever",
        data=body,
        method="POST",
        headers={
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(decode_webhook_secret(secret), webhook_id, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, answer = int(response.status), orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CheckFailed(f"the webhook answered {exc.code} {exc.read()[:300]!r}") from None
    if status != 202 or answer.get("accepted") != 1:
        raise CheckFailed(f"the webhook answered {status} {answer}")
    _say(f"signed webhook event {event_id}: 202 {answer}")

    def applied() -> bool:
        status, payload = _get(f"{api}/v1/events/{event_id}", {"authorization": f"Bearer {token}"})
        return status == 200 and orjson.loads(payload).get("status") == "applied"

    _wait(f"GET /v1/events/{event_id} = applied", applied)
    _say(f"GET /v1/events/{event_id} -> applied")

    if relay_metrics is not None:

        def relayed() -> bool:
            status, text = _get(relay_metrics)
            prefix = 'roster_outbox_relayed_total{topic="roster.changes.v1"}'
            return status == 200 and any(
                line.startswith(prefix) and float(line.split()[-1]) >= 1
                for line in text.decode().splitlines()
            )

        _wait("the relay publishing the student's roster change", relayed)
        _say("the relay published the student's roster change to roster.changes.v1")
    for name, url in metrics.items():

        def serves(url: str = url) -> bool:
            return _get(url)[0] == 200

        _wait(f"{name}'s {url}", serves)
        _say(f"{name} serves {url}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.smoke")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("services", help="run a local broker and database for the image")
    run.add_argument("home", type=Path)
    run.add_argument("env_file", type=Path)
    end_to_end = commands.add_parser("check", help="one signed event through a running API")
    end_to_end.add_argument("api")
    end_to_end.add_argument("--relay-metrics")
    end_to_end.add_argument("--metrics", action="append", default=[], metavar="NAME=URL")
    args = parser.parse_args(argv)
    if args.command == "services":
        return services(args.home.resolve(), args.env_file.resolve())
    try:
        named = dict(item.split("=", 1) for item in args.metrics)
        check(args.api.rstrip("/"), args.relay_metrics, named)
    except CheckFailed as exc:
        _say(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
