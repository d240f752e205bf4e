"""Whether a process can reach the database, Kafka or Clever at start-up, said in one line an
operator can act on:

    cannot reach the database at db.internal:5432/roster (Connection refused); check
    ROSTER_DATABASE_URL, and that PostgreSQL runs there and accepts connections from this host

The line names the component, its address without credentials (no user, password, query string
or token), the cause in a few words and what to check. Never a traceback, never a secret.

- A command that needs a dependency (`roster programs`, `migrate`, `assignments`, `redrive`) checks
  it first (`check`); the CLI prints the line on stderr and exits with `EXIT_UNREACHABLE`.
- A long-running process (`roster api`, `consume`, `relay`, `poll`) waits instead
  (`wait_until_reachable`): it logs the line at each failed attempt and tries again with backoff,
  so it comes up by itself once the dependency does.

A new dependency (Clever for the poller) is a `Dependency`: a component, an address made with
`url_address`, a hint, and a probe that raises when it cannot reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import asyncpg
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from service.retry import retrying

log = logging.getLogger(__name__)

EXIT_UNREACHABLE = 3  # the CLI's exit code when a dependency cannot be reached (2: a setting)
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Dependency:
    component: str  # "the database", "Kafka", "Clever"
    address: str  # never with credentials
    hint: str  # what to check, naming the setting
    probe: Callable[[], Awaitable[None]] = field(repr=False, compare=False)

    def unreachable(self, exc: BaseException) -> Unreachable:
        return Unreachable(self, cause(exc))


class Unreachable(Exception):
    """A dependency that did not answer; `str()` is the one line."""

    def __init__(self, dependency: Dependency, cause: str) -> None:
        self.dependency = dependency
        self.cause = cause
        super().__init__(
            f"cannot reach {dependency.component} at {dependency.address} ({cause}); "
            f"{dependency.hint}"
        )


# --- addresses without credentials -----------------------------------------------------------


def database_address(url: str) -> str:
    """`host:port/database` of a PostgreSQL URL (the socket directory for a local socket)."""
    try:
        parts = urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]  # the user and password end at the last '@'
        database = parts.path.lstrip("/")
        if not hosts:
            socket_dir = parse_qs(parts.query).get("host", ["local socket"])[0]
            return f"{socket_dir}/{database}"
        if ":" not in hosts.rsplit(",", 1)[-1] and not hosts.endswith("]"):
            hosts += ":5432"
        return f"{hosts}/{database}"
    except ValueError:
        return "(an unreadable URL)"


def kafka_address(bootstrap: str) -> str:
    """The bootstrap servers as given, without anything before an '@' in an entry."""
    return ",".join(
        entry.strip().rpartition("@")[2] for entry in bootstrap.split(",") if entry.strip()
    )


def url_address(url: str) -> str:
    """`scheme://host[:port]/path` of an HTTP URL: no user, password, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{host}{parts.path}"
    except ValueError:
        return "(an unreadable URL)"


# --- the causes, in a few words --------------------------------------------------------------

_ERRNO = re.compile(r"\[Errno (-?\d+)\] ?(.*)$")


def cause(exc: BaseException) -> str:
    """What went wrong, in a few words, without the statement, the URL or any credential."""
    # SQLAlchemy wraps the driver's error (`orig`), whose own cause is asyncpg's: name that one.
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException) and orig is not exc:
        return cause(orig)
    if isinstance(exc.__cause__, asyncpg.PostgresError) and not isinstance(
        exc, asyncpg.PostgresError
    ):
        return cause(exc.__cause__)
    if isinstance(exc, Unreachable):
        return exc.cause
    if isinstance(exc, (TimeoutError, KafkaTimeoutError)):
        return "no answer in time"
    if isinstance(exc, KafkaConnectionError):
        return "no broker answered"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        if exc.errno is not None and exc.errno > 0:
            return os.strerror(exc.errno)
        return exc.strerror or type(exc).__name__
    if isinstance(exc, asyncpg.PostgresError):
        # The server's own message ('password authentication failed for user "x"',
        # 'database "x" does not exist'): never the password.
        return _first_line(str(exc)) or type(exc).__name__
    return type(exc).__name__


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def _errno_text(message: str) -> str | None:
    """The cause in an aiokafka log line ('Unable connect to "h:1": [Errno 111] ...')."""
    found = _ERRNO.search(message)
    if found is None:
        return None
    number, text = int(found.group(1)), found.group(2)
    return os.strerror(number) if number > 0 else f"host name not resolved: {text}"


# --- probes ----------------------------------------------------------------------------------


def database(url: str, timeout: float = PROBE_TIMEOUT_S) -> Dependency:
    """PostgreSQL at `url` (ROSTER_DATABASE_URL): reached when a connection opens."""

    async def probe() -> None:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        connection = await asyncpg.connect(dsn, timeout=timeout)
        await connection.close()

    return Dependency(
        "the database",
        database_address(url),
        "check ROSTER_DATABASE_URL, and that PostgreSQL runs there and accepts connections "
        "from this host",
        probe,
    )


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _aiokafka_errors() -> Iterator[_Captured]:
    """aiokafka's own error lines during a probe, kept from the log (the probe's line says it
    once) to name the cause it does not put in its exception."""
    logger = logging.getLogger("aiokafka")
    captured = _Captured()
    propagate, level = logger.propagate, logger.level
    logger.addHandler(captured)
    logger.propagate = False
    logger.setLevel(logging.ERROR)
    try:
        yield captured
    finally:
        logger.removeHandler(captured)
        logger.propagate, logger.level = propagate, level


def kafka(bootstrap: str, timeout: float = PROBE_TIMEOUT_S) -> Dependency:
    """The Kafka cluster (ROSTER_KAFKA_BOOTSTRAP_SERVERS): reached when a broker answers a
    metadata request."""

    async def probe() -> None:
        with _aiokafka_errors() as errors:
            client = AIOKafkaClient(
                bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000)
            )
            try:
                async with asyncio.timeout(timeout):
                    await client.bootstrap()
            except (KafkaError, OSError) as exc:
                said = [t for t in map(_errno_text, errors.messages) if t]
                raise Unreachable(dependency, said[-1] if said else cause(exc)) from exc
            finally:
                await client.close()

    dependency = Dependency(
        "Kafka",
        kafka_address(bootstrap),
        "check ROSTER_KAFKA_BOOTSTRAP_SERVERS, and that the brokers run there and accept "
        "connections from this host",
        probe,
    )
    return dependency


# --- at start-up -----------------------------------------------------------------------------


async def check(*dependencies: Dependency) -> None:
    """Raises `Unreachable` for the first dependency that cannot be reached (a command's
    start-up: the CLI prints it and exits)."""
    for dependency in dependencies:
        try:
            await dependency.probe()
        except Unreachable:
            raise
        except Exception as exc:
            raise dependency.unreachable(exc) from exc


async def wait_until_reachable(
    dependency: Dependency,
    stop: asyncio.Event | None = None,
    *,
    first: float = 0.5,
    most: float = 30.0,
) -> bool:
    """Probes `dependency` until it answers, logging the one line at each failure and waiting
    `first`, then twice as long each time, at most `most` seconds (a long-running process's
    start-up); False if `stop` was set first."""

    failures = 0

    async def attempt() -> bool:
        if stop is not None and stop.is_set():
            return False
        await check(dependency)
        if failures:
            log.info(f"reached {dependency.component} at {dependency.address}")
        return True

    def failed(exc: Exception, wait: float) -> None:
        nonlocal failures
        failures += 1
        log.warning(
            f"{exc}; retrying in {wait:g} s",
            extra={
                "component": dependency.component,
                "address": dependency.address,
                "retry_in_s": wait,
            },
        )

    return await retrying(attempt, first=first, most=most, on_retry=failed, stop=stop)
