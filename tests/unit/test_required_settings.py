"""A process started on its own (not by `roster dev`) without a setting it needs stops at start-up
with one line naming what is missing: no traceback, no fallback to the local stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.kafka import free_port
from service.paths import project_root

DB = "ROSTER_DATABASE_URL"
KAFKA = "ROSTER_KAFKA_BOOTSTRAP_SERVERS"
SECRETS = "ROSTER_WEBHOOK_SECRETS"
TOKEN = "ROSTER_ADMIN_TOKEN"
GIVEN = {DB: "postgresql://roster@db.invalid/roster", KAFKA: "kafka.invalid:9092"}


def _run(command: list[str], given: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTER_")}
    env |= {
        "ROSTER_HOME": str(home),  # where a fallback would look for (or create) local state
        "ROSTER_HTTP_PORT": str(free_port()),  # should the API start anyway, not on a shared port
        "ROSTER_CONSUMER_METRICS_PORT": "0",
        "ROSTER_RELAY_METRICS_PORT": "0",
        "ROSTER_POLLER_METRICS_PORT": "0",
        **given,
    }
    return subprocess.run(
        [sys.executable, "-m", "service", *command],
        env=env,
        capture_output=True,
        text=True,
        cwd=project_root(),
        timeout=60,  # a guard only: a process that does not stop at start-up fails the test
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "given", "missing"),
    [
        (["api"], {}, [DB, KAFKA, SECRETS, TOKEN]),
        (["api"], GIVEN, [SECRETS, TOKEN]),
        (["api"], {**GIVEN, SECRETS: "whsec_" + "a" * 32}, [TOKEN]),
        (["consume"], {}, [DB, KAFKA]),
        (["relay"], {DB: GIVEN[DB]}, [KAFKA]),
        (["poll"], {}, [DB, KAFKA]),
        (["poll"], {KAFKA: GIVEN[KAFKA]}, [DB]),
        (["migrate"], {}, [DB]),
        (["redrive"], {KAFKA: GIVEN[KAFKA]}, [DB]),
        (["assignments", "list"], {}, [DB]),
    ],
)
def test_a_missing_setting_stops_the_process_in_one_line(
    command: list[str], given: dict[str, str], missing: list[str], tmp_path: Path
) -> None:
    result = _run(command, given, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0] == (
        f"roster: missing setting {', '.join(missing)} (only `roster dev` provides local defaults)"
    )
    assert result.stdout == ""
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []  # no dev credentials made
