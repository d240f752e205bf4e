"""The `roster relay` process: publishes the outbox to the downstream topics."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer

from service.db.engine import database_url, make_engine
from service.kafka.config import bootstrap_servers, producer_options, topic_durability
from service.outbox.relay import Relay
from service.settings import Settings
from service.worker import close_all, serve_metrics, stop_on_signals, wait_for_topics

log = logging.getLogger(__name__)


async def run_relay(settings: Settings) -> None:
    stop = stop_on_signals()
    bootstrap = bootstrap_servers(settings)
    if not await wait_for_topics(bootstrap, stop, topic_durability(settings)):
        return
    serve_metrics(settings.relay_metrics_port, settings.http_host, "relay")
    engine = make_engine(database_url(settings), pool_size=2)
    options = producer_options(bootstrap)
    producer = AIOKafkaProducer(**options)
    relay = Relay(
        engine,
        producer,
        batch=settings.relay_batch,
        poll_seconds=settings.relay_poll_seconds,
        publish_timeout=settings.publish_timeout_seconds,
        retention_seconds=settings.outbox_retention_seconds,
        producer_options=options,
    )
    try:
        await producer.start()
        log.info("relay started")
        await relay.run(stop)
    finally:
        await close_all(relay.producer.stop(), engine.dispose())
