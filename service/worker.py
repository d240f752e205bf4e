"""The one start-up of every background process (`roster consume`, `roster relay`): stop on SIGTERM
or SIGINT, wait for Kafka, the database and the topics (each failure logged in one line, naming
what and where: service/reach.py), serve its own /metrics, open the engine and a producer, run the
process's loop, and close what it opened within a bound (`run_worker`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from service import reach, tracing
from service.db import migrate
from service.db.engine import database_url, make_engine
from service.kafka.config import bootstrap_servers, producer_options, topic_durability
from service.kafka.topics import Durability, ensure_topics
from service.retry import retrying
from service.settings import Settings

log = logging.getLogger(__name__)


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_for_topics(
    bootstrap: str,
    stop: asyncio.Event,
    durability: Durability = Durability(),  # noqa: B008 (frozen: one shared default is safe)
) -> bool:
    """Creates the topics once Kafka answers, retrying with backoff; False if stopped first."""

    async def attempt() -> bool:
        if stop.is_set():
            return False
        await ensure_topics(bootstrap, durability=durability)
        return True

    def failed(exc: Exception, wait: float) -> None:
        log.warning(
            f"Kafka at {reach.kafka_address(bootstrap)}: topics not ready ({reach.cause(exc)}); "
            f"retrying in {wait:g} s",
            extra={"error": type(exc).__name__, "retry_in_s": wait},
        )

    return await retrying(attempt, first=0.2, most=5.0, on_retry=failed, stop=stop)


class SchemaBehind(Exception):
    """The database's schema is behind this code's migrations; `str()` says by how much."""


async def wait_for_schema(engine: AsyncEngine, stop: asyncio.Event) -> bool:
    """Waits until the database's schema is at this code's migration head (or ahead: a rolling
    deploy runs the migrate Job first), logging why not in one line at each try; False if
    stopped first. A worker on an older schema would otherwise fail at its first write, on a
    column or table it does not find, and keep failing."""

    async def attempt() -> bool:
        if stop.is_set():
            return False
        problem = await asyncio.wait_for(migrate.schema_behind(engine), reach.PROBE_TIMEOUT_S)
        if problem is not None:
            raise SchemaBehind(problem)
        return True

    def failed(exc: Exception, wait: float) -> None:
        why = str(exc) if isinstance(exc, SchemaBehind) else reach.cause(exc)
        log.warning(
            f"the database schema is not ready: {why}; retrying in {wait:g} s",
            extra={"error": type(exc).__name__, "retry_in_s": wait},
        )

    return await retrying(attempt, first=1.0, most=30.0, on_retry=failed, stop=stop)


def serve_metrics(port: int, host: str, what: str) -> None:
    """This process's /metrics on its own port (0: not served); a taken port is a warning."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning(f"{what} metrics not served", extra={"port": port, "error": str(exc)})


async def close_all(*closing: Awaitable[object], timeout: float = 10) -> None:
    """Bounded: with the broker or the database gone, a stop must still end the process."""
    for step in closing:
        try:
            await asyncio.wait_for(step, timeout=timeout)
        except Exception as exc:
            log.warning("shutdown step did not finish", extra={"error": type(exc).__name__})


@dataclass(frozen=True)
class Opened:
    """What `run_worker` opened for a process, once Kafka and its topics are there."""

    bootstrap: str
    engine: AsyncEngine
    producer: AIOKafkaProducer  # started by `run_worker` before `Worker.run`
    producer_options: dict[str, Any]  # what it was made with (the relay renews it)


class Worker(Protocol):
    """A background process's own part, built from what `run_worker` opened."""

    async def run(self, stop: asyncio.Event) -> None:
        """Starts what else it needs, then loops until `stop` is set."""

    def closing(self) -> Sequence[Awaitable[object]]:
        """Stops its Kafka clients, its producer among them, in order (the engine follows)."""


async def run_worker(
    settings: Settings,
    what: str,
    *,
    metrics_port: int,
    pool_size: int,
    build: Callable[[Opened], Worker],
) -> None:
    """Runs one background process from start-up to an orderly stop (a stop before Kafka, the
    database and the topics are there ends it at once, having opened nothing)."""
    stop = stop_on_signals()
    tracing.setup(what)
    bootstrap = bootstrap_servers(settings)
    url = database_url(settings)
    for dependency in (reach.kafka(bootstrap), reach.database(url)):
        if not await reach.wait_until_reachable(dependency, stop):
            return
    if not await wait_for_topics(bootstrap, stop, topic_durability(settings)):
        return
    # Served before the schema wait: a worker waiting for a long migrate Job is alive, and its
    # start-up probe must not have it restarted over and over.
    serve_metrics(metrics_port, settings.http_host, what)
    engine = make_engine(url, pool_size=pool_size)
    try:
        ready = await wait_for_schema(engine, stop)
    except BaseException:
        await engine.dispose()
        raise
    if not ready:  # stopped while waiting
        await engine.dispose()
        return
    options = producer_options(bootstrap)
    producer = AIOKafkaProducer(**options)
    worker = build(Opened(bootstrap, engine, producer, options))
    try:
        await producer.start()
        await worker.run(stop)
    finally:
        await close_all(*worker.closing(), engine.dispose())
