"""What every background process (`roster consume`, `roster relay`) does before its loop: stop on
SIGTERM or SIGINT, wait for Kafka and its topics, serve its own /metrics, and close what it opened
within a bound."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable

from prometheus_client import start_http_server

from service.kafka.topics import Durability, ensure_topics
from service.retry import retrying

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

    def failed(exc: Exception, _wait: float) -> None:
        log.warning("Kafka not reachable yet; retrying", extra={"error": repr(exc)})

    return await retrying(attempt, first=0.2, most=5.0, on_retry=failed, stop=stop)


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
