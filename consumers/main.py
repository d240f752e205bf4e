"""The `roster consume` process: a consumer group on `clever.events.v1`."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumers.dead_letters import KafkaDeadLetters
from consumers.roster import RosterApplier
from consumers.runner import ConsumerRunner, consumer_options
from service.db.engine import database_url, make_engine
from service.kafka.config import bootstrap_servers, producer_options, topic_durability
from service.kafka.topics import CLEVER_EVENTS
from service.settings import Settings
from service.worker import close_all, serve_metrics, stop_on_signals, wait_for_topics

log = logging.getLogger(__name__)


async def run_consumer(settings: Settings) -> None:
    stop = stop_on_signals()
    bootstrap = bootstrap_servers(settings)
    if not await wait_for_topics(bootstrap, stop, topic_durability(settings)):
        return
    serve_metrics(settings.consumer_metrics_port, settings.http_host, "consumer")
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
        await close_all(consumer.stop(), producer.stop(), engine.dispose())
