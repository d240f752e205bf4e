"""A worker whose broker answers but whose database does not logs, in one line per attempt, which
database it cannot reach (no credentials) and keeps trying; a stop ends it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.support.pipeline import roster_logging
from tests.support.services import Services

PASSWORD = "pw-Sekr3t-0452"


@pytest.mark.parametrize("command", ["consume", "relay"])
def test_a_worker_waits_for_an_unreachable_database(services: Services, command: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROSTER_", "OTEL_"))} | {
        "ROSTER_DATABASE_URL": f"postgresql://dbuser:{PASSWORD}@127.0.0.1:{port}/roster",
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "ROSTER_CONSUMER_METRICS_PORT": "0",
        "ROSTER_RELAY_METRICS_PORT": "0",
    }
    process = roster_logging(command, env)
    assert process.stderr is not None
    wanted = f"cannot reach the database at 127.0.0.1:{port}/roster (Connection refused)"
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while sum(wanted in line for line in lines) < 2 and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
        assert sum(wanted in line for line in lines) == 2, lines
        assert process.poll() is None  # still trying
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    text = "".join(lines) + rest
    assert process.returncode == 0, text
    assert "Traceback" not in text and PASSWORD not in text and "dbuser" not in text
    assert "Kafka" not in "".join(lines)  # the broker answered: nothing said about it
