"""The API process's one long-lived, idempotent Kafka producer.

It connects in the background and keeps retrying, so the API starts and serves `/healthz` (and
`/readyz` says Kafka is down) while the broker is unreachable; once connected, aiokafka itself
reconnects after broker restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer

from service import reach
from service.kafka.config import producer_options
from service.kafka.topics import ALL_TOPICS, Durability, TopicSpec, ensure_topics
from service.retry import retrying

log = logging.getLogger(__name__)


class KafkaGateway:
    def __init__(
        self,
        bootstrap_servers: str,
        topics: tuple[TopicSpec, ...] = ALL_TOPICS,
        durability: Durability = Durability(),  # noqa: B008 (frozen: one shared default is safe)
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._topics = topics
        self._durability = durability
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    @classmethod
    def over(cls, producer: AIOKafkaProducer, bootstrap_servers: str) -> KafkaGateway:
        """A gateway over a producer its owner started and stops (a worker process's, for the
        poller's ingest): `start` and `stop` are not called on it."""
        gateway = cls(bootstrap_servers)
        gateway._producer = producer
        gateway.connected.set()
        return gateway

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._producer

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="kafka-connect")

    async def _connect(self) -> None:
        producer: AIOKafkaProducer | None = None
        dependency = reach.kafka(self.bootstrap_servers)

        async def attempt() -> AIOKafkaProducer:
            nonlocal producer
            producer = None  # one that cannot even be built is not retried (retry_if below)
            producer = AIOKafkaProducer(**producer_options(self.bootstrap_servers))
            await reach.check(dependency)  # names the cause; aiokafka's own lines kept quiet
            await ensure_topics(self.bootstrap_servers, self._topics, self._durability)
            await producer.start()
            return producer

        async def failed(exc: Exception, wait: float) -> None:
            assert producer is not None
            await producer.stop()
            log.warning(
                f"{dependency.unreachable(exc)}; retrying in {wait:g} s",
                extra={"error": type(exc).__name__, "retry_in_s": wait},
            )

        self._producer = await retrying(
            attempt,
            first=0.2,
            most=5.0,
            on_retry=failed,
            retry_if=lambda _exc: producer is not None,
        )
        self.connected.set()
        log.info("Kafka producer connected", extra={"bootstrap": self.bootstrap_servers})

    async def probe(self, timeout: float = 2.0) -> str | None:
        """None when Kafka answers a metadata request in time, else why not."""
        if self._producer is None:
            return "producer not connected"
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout)
        except Exception as exc:
            return f"metadata request failed: {type(exc).__name__}"
        return None

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
