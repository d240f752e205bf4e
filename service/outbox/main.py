"""The `roster relay` process: publishes the outbox to the downstream topics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

from service.outbox.relay import Relay
from service.settings import Settings
from service.worker import Opened, run_worker

log = logging.getLogger(__name__)


class _Relaying:
    """The outbox relay, starting on the producer opened for it (it renews it after a refusal)."""

    def __init__(self, settings: Settings, opened: Opened) -> None:
        self.relay = Relay(
            opened.engine,
            opened.producer,
            batch=settings.relay_batch,
            poll_seconds=settings.relay_poll_seconds,
            publish_timeout=settings.publish_timeout_seconds,
            retention_seconds=settings.outbox_retention_seconds,
            producer_options=opened.producer_options,
        )

    async def run(self, stop: asyncio.Event) -> None:
        log.info("relay started")
        await self.relay.run(stop)

    def closing(self) -> Sequence[Awaitable[object]]:
        return (self.relay.producer.stop(),)  # the relay's current one: it may have renewed it


async def run_relay(settings: Settings) -> None:
    await run_worker(
        settings,
        "relay",
        metrics_port=settings.relay_metrics_port,
        pool_size=2,
        build=lambda opened: _Relaying(settings, opened),
    )
