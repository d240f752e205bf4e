"""The broker and database that scripts/image runs the image against (dev only).

`python -m devstack.smoke HOME ENV_FILE` starts the Maven-fetched Kafka broker and the embedded
PostgreSQL (listening on loopback TCP as well: a container cannot reach the Unix socket) on free
ports under HOME, picks free ports for the processes the script runs from the image, and writes
every `ROSTER_*` setting they need to ENV_FILE (one `NAME=value` a line, as `podman run
--env-file` reads it; the file only appears once both services answer). It then runs until SIGTERM
or SIGINT, stops the broker and the database, and removes HOME. If the script that started it dies
outright, the services die with this process (devstack/process.py).

The secret and token are random per run: the smoke test signs its event with them and nothing
keeps them.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import sys
import time
from pathlib import Path

from devstack.kafka import LocalKafka, free_port
from devstack.postgres import LocalPostgres
from devstack.process import (
    ManagedProcess,
    StopRequested,
    ignore_stop_signals,
    raise_on_stop_signals,
)


def _say(line: str) -> None:
    print(f"devstack.smoke: {line}", file=sys.stderr, flush=True)


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
        # No Clever behind the poller here: with no token it has no district to poll and idles.
        "ROSTER_CLEVER_API_URL": "http://127.0.0.1:9",
        "ROSTER_CLEVER_OAUTH_URL": "http://127.0.0.1:9",
    }


def main(home: Path, env_file: Path) -> int:
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
            f"PostgreSQL on 127.0.0.1:{postgres.tcp_port} and Kafka on "
            f"{kafka.bootstrap_servers} ready in {time.monotonic() - t0:.1f}s"
        )
        values = settings_for(kafka.bootstrap_servers, postgres.tcp_url())
        partial = env_file.with_name(env_file.name + ".partial")
        partial.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
        partial.replace(env_file)  # whole or absent: the script waits for it to appear
        while all(proc.running() for proc in started):
            time.sleep(0.2)
        _say("a service exited on its own; stopping")
        code = 1
    except StopRequested:
        pass
    except (RuntimeError, TimeoutError, OSError) as exc:
        _say(f"failed: {exc}")
        code = 1
    finally:
        ignore_stop_signals()
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(home, ignore_errors=True)
    return code


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m devstack.smoke HOME ENV_FILE", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
