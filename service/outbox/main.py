"""The `roster relay` process: publishes the outbox to the downstream topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiokafka import AIOKafkaProducer
from prometheus_client import start_http_server

from service.db.engine import database_url, make_engine
from service.kafka.config import bootstrap_servers, producer_options
from service.kafka.topics import ensure_topics
from service.outbox.relay import Relay
from service.settings import Settings

log = logging.getLogger(__name__)


async def run_relay(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    bootstrap = bootstrap_servers(settings)
    delay = 0.2
    while not stop.is_set():
        try:
            await ensure_topics(bootstrap)
            break
        except Exception as exc:
            log.warning("Kafka not reachable yet; retrying", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 5.0)
    if stop.is_set():
        return
    if settings.relay_metrics_port:
        try:
            start_http_server(settings.relay_metrics_port, addr=settings.http_host)
        except OSError as exc:
            log.warning(
                "relay metrics not served",
                extra={"port": settings.relay_metrics_port, "error": str(exc)},
            )
    engine = make_engine(database_url(settings), pool_size=2)
    producer = AIOKafkaProducer(**producer_options(bootstrap))
    relay = Relay(
        engine,
        producer,
        batch=settings.relay_batch,
        poll_seconds=settings.relay_poll_seconds,
        publish_timeout=settings.publish_timeout_seconds,
        retention_seconds=settings.outbox_retention_seconds,
    )
    try:
        await producer.start()
        log.info("relay started")
        await relay.run(stop)
    finally:
        for closing in (producer.stop(), engine.dispose()):
            try:
                await asyncio.wait_for(closing, timeout=10)
            except Exception as exc:
                log.warning("shutdown step did not finish", extra={"error": type(exc).__name__})
