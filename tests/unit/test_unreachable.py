"""A command that cannot reach the database or the broker says so in one line (what, where without
credentials, what to check) and exits 3; a long-running process logs that line and keeps trying.
Run as an operator would: `roster ...` as its own process, against a closed local port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.exc import ProgrammingError

from service import reach
from service.paths import project_root

PASSWORD = "pw-Sekr3t-0451"


def _free_port() -> int:
    """A loopback port nothing listens on (taken, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def closed_port() -> int:
    return _free_port()


def _env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROSTER_", "OTEL_"))}
    return env | {
        "ROSTER_DATABASE_URL": f"postgresql://dbuser:{PASSWORD}@127.0.0.1:{port}/roster",
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "ROSTER_CONSUMER_METRICS_PORT": "0",
        "ROSTER_RELAY_METRICS_PORT": "0",
        **extra,
    }


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=project_root(),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


DATABASE_COMMANDS = [
    ["programs"],
    ["migrate"],
    ["assignments", "list"],
    ["assignments", "add", "mypath_math", "school", "5f0c1a2b3c4d5e6f7a8b9c01"],
    ["assignments", "remove", "a1"],
]


def test_commands_name_the_unreachable_dependency_in_one_line(closed_port: int) -> None:
    env = _env(closed_port)
    # Started together: each spends most of its time importing.
    runs = {" ".join(args): _start(args, env) for args in [*DATABASE_COMMANDS, ["redrive"]]}
    for name, process in runs.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == reach.EXIT_UNREACHABLE, (name, err)
        assert out == "", name
        assert err.count("\n") == 1 and err.endswith("\n"), (name, err)
        assert "Traceback" not in err and PASSWORD not in err and "dbuser" not in err, err
        # redrive checks the broker first (it reads the dead letters from there).
        if name == "redrive":
            expected = f"roster: cannot reach Kafka at 127.0.0.1:{closed_port} (Connection refused)"
            assert err.startswith(expected), err
            assert "check ROSTER_KAFKA_BOOTSTRAP_SERVERS" in err
        else:
            expected = (
                f"roster: cannot reach the database at 127.0.0.1:{closed_port}/roster "
                "(Connection refused)"
            )
            assert err.startswith(expected), (name, err)
            assert "check ROSTER_DATABASE_URL" in err


def test_an_unknown_host_is_named_as_such() -> None:
    env = _env(1) | {"ROSTER_DATABASE_URL": f"postgresql://u:{PASSWORD}@db.invalid/roster"}
    done = subprocess.run(
        [sys.executable, "-m", "service", "programs"],
        cwd=project_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == reach.EXIT_UNREACHABLE
    assert done.stderr.startswith(
        "roster: cannot reach the database at db.invalid:5432/roster (host name not resolved"
    ), done.stderr
    assert PASSWORD not in done.stderr and done.stderr.count("\n") == 1


def _lines_until(process: subprocess.Popen[str], wanted: str, count: int) -> Iterator[str]:
    """stderr lines until `count` of them hold `wanted` (the process keeps running)."""
    assert process.stderr is not None
    seen = 0
    deadline = time.monotonic() + 120
    while seen < count and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen += wanted in line
        yield line


@pytest.mark.parametrize(
    ("command", "component"),
    [("consume", "Kafka"), ("relay", "Kafka"), ("api", "the database")],
)
def test_long_running_processes_log_it_and_keep_trying(
    closed_port: int, command: str, component: str
) -> None:
    env = _env(
        closed_port,
        ROSTER_WEBHOOK_SECRETS="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=",
        ROSTER_ADMIN_TOKEN="an-admin-token-for-tests",
        ROSTER_HTTP_PORT=str(_free_port()),
    )
    process = _start([command], env)
    try:
        address = f"127.0.0.1:{closed_port}"
        wanted = f"cannot reach {component} at {address}"
        lines = list(_lines_until(process, wanted, 2))  # a first try, and a retry after a wait
        assert sum(wanted in line for line in lines) == 2, lines
        assert process.poll() is None  # still running, still trying
        text = "".join(lines)
        assert "Traceback" not in text and PASSWORD not in text
        assert "retrying in" in text
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    if command == "api":  # an orderly stop; uvicorn then re-raises the signal it handled
        assert process.returncode in (0, -signal.SIGTERM) and "shutdown complete" in err, err
    else:
        assert process.returncode == 0, err
    assert "Traceback" not in err and PASSWORD not in err + out


def test_addresses_carry_no_credentials() -> None:
    assert reach.database_address("postgresql://u:p@db.example:6432/roster") == (
        "db.example:6432/roster"
    )
    assert reach.database_address("postgresql+asyncpg://u:p%40x@db/roster?sslmode=require") == (
        "db:5432/roster"
    )
    assert reach.database_address("postgresql://u@/roster?host=/run/pg") == "/run/pg/roster"
    assert reach.kafka_address("b1:9092, user:pw@b2:9093") == "b1:9092,b2:9093"
    assert reach.url_address("https://user:tok@api.clever.com/v3.0/events?key=k") == (
        "https://api.clever.com/v3.0/events"
    )


def test_a_database_error_wrapped_by_sqlalchemy_is_named_by_the_server_s_message() -> None:
    """A reachable database whose query fails (a worker's schema check): the cause is what the
    server said, not the wrapper's class name."""
    server = asyncpg.exceptions.InsufficientPrivilegeError(
        "permission denied for table alembic_version"
    )
    adapted = Exception("the driver adapter's copy")
    adapted.__cause__ = server
    wrapped = ProgrammingError("SELECT version_num FROM alembic_version", {}, adapted)
    assert reach.cause(wrapped) == "permission denied for table alembic_version"
