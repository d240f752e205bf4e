"""The `roster consume` process: a consumer group on `clever.events.v1`."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import start_http_server

from consumers.dead_letters import KafkaDeadLetters
from consumers.roster import RosterApplier
from consumers.runner import ConsumerRunner, consumer_options
from service.db.engine import database_url, make_engine
from service.kafka.config import bootstrap_servers, producer_options
from service.kafka.topics import CLEVER_EVENTS, ensure_topics
from service.settings import Settings

log = logging.getLogger(__name__)


async def run_consumer(settings: Settings) -> None:
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
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    if stop.is_set():
        return

    if settings.consumer_metrics_port:
        try:
            start_http_server(settings.consumer_metrics_port, addr=settings.http_host)
        except OSError as exc:
            log.warning(
                "consumer metrics not served",
                extra={"port": settings.consumer_metrics_port, "error": str(exc)},
            )
    engine = make_engine(database_url(settings), pool_size=settings.consumer_concurrency + 1)
    consumer = AIOKafkaConsumer(**consumer_options(bootstrap, settings.consumer_group))
    producer = AIOKafkaProducer(**producer_options(bootstrap))
    applier = RosterApplier(KafkaDeadLetters(producer))
    runner = ConsumerRunner(
        consumer,
        engine,
        applier,
        topics=[CLEVER_EVENTS.name],
        max_batch=settings.consumer_max_batch,
        concurrency=settings.consumer_concurrency,
    )
    try:
        await producer.start()
        await consumer.start()
        log.info("consumer started", extra={"group": settings.consumer_group})
        await runner.run(stop)
    finally:
        # Bounded: with the broker or the database gone, a stop must still end the process.
        for closing in (consumer.stop(), producer.stop(), engine.dispose()):
            try:
                await asyncio.wait_for(closing, timeout=10)
            except Exception as exc:
                log.warning("shutdown step did not finish", extra={"error": type(exc).__name__})
