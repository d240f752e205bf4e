"""The `roster consume` process: a consumer group on `clever.events.v1`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

from aiokafka import AIOKafkaConsumer

from consumers.dead_letters import KafkaDeadLetters
from consumers.roster import RosterApplier
from consumers.runner import ConsumerRunner, consumer_options
from service.kafka.topics import CLEVER_EVENTS
from service.settings import Settings
from service.worker import Opened, run_worker

log = logging.getLogger(__name__)


class _Consumer:
    """The consumer group, applying batches to the roster (dead letters through the producer)."""

    def __init__(self, settings: Settings, opened: Opened) -> None:
        self.group = settings.consumer_group
        self.consumer = AIOKafkaConsumer(**consumer_options(opened.bootstrap, self.group))
        self.producer = opened.producer
        self.runner = ConsumerRunner(
            self.consumer,
            opened.engine,
            RosterApplier(KafkaDeadLetters(opened.producer)),
            topics=[CLEVER_EVENTS.name],
            max_batch=settings.consumer_max_batch,
            concurrency=settings.consumer_concurrency,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.consumer.start()
        log.info("consumer started", extra={"group": self.group})
        await self.runner.run(stop)

    def closing(self) -> Sequence[Awaitable[object]]:
        return (self.consumer.stop(), self.producer.stop())


async def run_consumer(settings: Settings) -> None:
    await run_worker(
        settings,
        "consumer",
        metrics_port=settings.consumer_metrics_port,
        pool_size=settings.consumer_concurrency + 1,
        build=lambda opened: _Consumer(settings, opened),
    )
