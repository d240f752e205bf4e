"""The `roster consume` process: a consumer group on `clever.events.v1`."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiokafka import AIOKafkaConsumer

from consumers.event_log import EventLogRecorder
from consumers.runner import ConsumerRunner, consumer_options
from service.db.engine import database_url, make_engine
from service.kafka.config import bootstrap_servers
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

    engine = make_engine(database_url(settings), pool_size=2)
    consumer = AIOKafkaConsumer(**consumer_options(bootstrap, settings.consumer_group))
    runner = ConsumerRunner(
        consumer,
        engine,
        EventLogRecorder(),
        topics=[CLEVER_EVENTS.name],
        max_batch=settings.consumer_max_batch,
    )
    try:
        await consumer.start()
        log.info("consumer started", extra={"group": settings.consumer_group})
        await runner.run(stop)
    finally:
        await consumer.stop()
        await engine.dispose()
