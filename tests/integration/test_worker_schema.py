"""A worker started on a database whose schema is behind its code says so in one line per attempt
and waits; once `roster migrate` has run, it goes on by itself."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
import uuid

from service.db.migrate import upgrade
from tests.support.pipeline import roster_logging
from tests.support.services import Services, create_database, drop_database


def _lines(stream: object) -> queue.Queue[str]:
    """The stream's lines, read by a thread (a blocking readline would outlive a deadline)."""
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:  # type: ignore[attr-defined]
            found.put(line)

    threading.Thread(target=read, daemon=True).start()
    return found


def _until(lines: queue.Queue[str], seen: list[str], wanted: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if wanted in line:
            return True
    return False


def test_a_consumer_waits_for_the_schema_then_starts_once_migrated(services: Services) -> None:
    name = f"roster_unmigrated_{uuid.uuid4().hex[:8]}"
    url = create_database(services.database_url, name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROSTER_", "OTEL_"))} | {
        "ROSTER_DATABASE_URL": url,
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "ROSTER_CONSUMER_GROUP": f"schema-{uuid.uuid4().hex[:8]}",
        "ROSTER_CONSUMER_METRICS_PORT": "0",
    }
    process = roster_logging("consume", env)
    assert process.stderr is not None
    lines = _lines(process.stderr)
    seen: list[str] = []
    wanted = "the database schema is not ready: no migrations applied (run `roster migrate`)"
    try:
        assert _until(lines, seen, wanted, 120), seen
        assert _until(lines, seen, wanted, 30), seen  # again: it keeps trying
        assert process.poll() is None
        assert "partitions assigned" not in "".join(seen)  # it did not start on that schema

        upgrade(url)
        assert _until(lines, seen, "partitions assigned", 120), seen
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        drop_database(services.database_url, name)
    assert process.returncode == 0, seen
    assert not any("Traceback" in line for line in seen), seen
