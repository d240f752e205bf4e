"""The `roster poll` process: the Events API poller (service/pull/poller.py) with its own
/metrics (`ROSTER_POLLER_METRICS_PORT`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

from service.clever import CleverClient, Tokens, new_http_client
from service.db.driver_pool import DriverPool, driver_dsn
from service.db.engine import database_url
from service.kafka.gateway import KafkaGateway
from service.pull.backfill import run_backfill
from service.pull.metrics import PollerObserver
from service.pull.poller import Poller, RunBackfill, new_poller_id
from service.settings import Settings
from service.webhooks.ingest import Ingestor
from service.worker import Opened, run_worker

log = logging.getLogger(__name__)


def backfill_runner(
    settings: Settings, opened: Opened, client: CleverClient, ingestor: Ingestor, runner: str
) -> RunBackfill:
    """How this poller runs a backfill: as its runner, fenced on its own lease."""

    async def run(backfill_id: str) -> str:
        result = await run_backfill(
            backfill_id,
            engine=opened.engine,
            client=client,
            ingestor=ingestor,
            settings=settings,
            runner=runner,
            lease_owner=runner,
        )
        return result.status

    return run


class _Polling:
    def __init__(self, settings: Settings, opened: Opened) -> None:
        self.id = new_poller_id()
        self.http = new_http_client(settings)
        self.tokens = Tokens(settings, self.http)
        self.client = CleverClient(
            settings, self.tokens, observer=PollerObserver(), process_id=self.id, http=self.http
        )
        self.producer = opened.producer
        # The ingest's own driver connections, as in the API (service/app.py).
        self.pool = DriverPool(driver_dsn(database_url(settings)), size=3)
        self.ingestor = Ingestor(
            self.pool,
            KafkaGateway.over(opened.producer, opened.bootstrap),
            timeout=settings.publish_timeout_seconds,
            database_timeout=settings.webhook_database_timeout_seconds,
            max_queued_events=max(settings.webhook_max_queued_events, settings.clever_page_limit),
        )
        self.poller = Poller(
            engine=opened.engine,
            producer=opened.producer,
            ingestor=self.ingestor,
            client=self.client,
            tokens=self.tokens,
            run_backfill=backfill_runner(settings, opened, self.client, self.ingestor, self.id),
            poller_id=self.id,
            lease_seconds=settings.poll_lease_seconds,
            poll_interval=settings.poll_interval_seconds,
            max_concurrent=settings.poll_max_concurrent_districts,
            publish_timeout=settings.publish_timeout_seconds,
        )

    async def run(self, stop: asyncio.Event) -> None:
        log.info("poller started", extra={"poller": self.id})
        await self.poller.run(stop)

    def closing(self) -> Sequence[Awaitable[object]]:
        return (
            self.ingestor.drain(),
            self.client.aclose(),
            self.http.aclose(),
            self.pool.close(),
            self.producer.stop(),
        )


async def run_poller(settings: Settings) -> None:
    await run_worker(
        settings,
        "poller",
        metrics_port=settings.poller_metrics_port,
        pool_size=settings.poll_max_concurrent_districts + 2,
        build=lambda opened: _Polling(settings, opened),
    )
