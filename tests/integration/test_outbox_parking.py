"""An outbox row the broker will never accept is parked with its error, visible in the metrics and
the API, and the relay goes on with the rows after it; re-queued once the cause is fixed, it is
published."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.uow import UnitOfWork
from service.kafka.config import producer_options
from service.outbox import store
from service.outbox.relay import Relay
from service.outbox.store import Outgoing
from tests.integration.conftest import api_settings, running_api
from tests.support.services import Services
from tests.support.topic import read_records
from tests.support.webhook import ADMIN_TOKEN

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
TOPIC_LIMIT = 20_000  # the test topic's max.message.bytes


async def _topic(bootstrap: str, name: str, max_message_bytes: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(max_message_bytes)}
        existing = await admin.list_topics()
        if name in existing:
            resource = ConfigResource(ConfigResourceType.TOPIC, name, configs=config)
            await admin.alter_configs([resource])
            async with asyncio.timeout(30):  # until the broker reports the new limit
                while str(max_message_bytes) not in repr(await admin.describe_configs([resource])):  # noqa: ASYNC110 (polling the broker)
                    await asyncio.sleep(0.1)
        else:
            await admin.create_topics([NewTopic(name, 1, 1, topic_configs=config)])
    finally:
        await admin.close()


async def _rows(engine: AsyncEngine, district_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, message_key, sequence, sent_at, parked_at, park_error FROM outbox"
                " WHERE district_id = :d ORDER BY id"
            ),
            {"d": district_id},
        )
        return [dict(r._mapping) for r in rows]


async def _relay_until_settled(relay: Relay, engine: AsyncEngine, district_id: str) -> None:
    async with asyncio.timeout(60):
        while any(
            r["sent_at"] is None and r["parked_at"] is None
            for r in await _rows(engine, district_id)
        ):
            await relay.relay_once()


async def test_a_row_too_large_for_its_topic_is_parked_and_the_rows_after_it_are_published(
    services: Services, engine: AsyncEngine
) -> None:
    run = uuid.uuid4().hex[:12]
    topic, district, key, other = f"test.parking.{run}", f"d-{run}", f"k-{run}", f"o-{run}"
    await _topic(services.kafka_bootstrap, topic, TOPIC_LIMIT)

    def message(k: str, n: int, size: int = 0) -> Outgoing:
        return Outgoing(topic, k, "test.upserted", district, {"id": k, "n": n, "pad": "x" * size})

    # The large row shares its key with the row after it, and a record batch with all of them.
    async with UnitOfWork(engine) as uow:
        await store.append(
            uow.connection,
            [
                message(key, 1),
                message(other, 1),
                message(key, 2, size=2 * TOPIC_LIMIT),
                message(key, 3),
                message(other, 2),
            ],
        )
        await uow.commit()
    big = (await _rows(engine, district))[2]

    options = producer_options(services.kafka_bootstrap)
    relay = Relay(engine, AIOKafkaProducer(**options), producer_options=options)
    await relay.producer.start()
    try:
        await _relay_until_settled(relay, engine, district)
        rows = await _rows(engine, district)
        assert [r["id"] for r in rows if r["parked_at"] is not None] == [big["id"]]
        assert rows[2]["park_error"].startswith("MessageSizeTooLargeError")
        assert all(r["sent_at"] is not None for r in rows if r["id"] != big["id"])
        published = await read_records(services.kafka_bootstrap, topic)
        assert [(r.key.decode(), dict(r.headers)["ce_sequence"]) for r in published] == [
            (key, b"1"),
            (other, b"1"),
            (key, b"3"),  # the key goes on past its parked row
            (other, b"2"),
        ]
        await relay.housekeeping()
        assert REGISTRY.get_sample_value("roster_outbox_parked") == 1

        async with running_api(api_settings(services)) as api:
            listed = await api.client.get("/v1/outbox/parked", headers=ADMIN)
            assert listed.status_code == 200
            (item,) = [i for i in listed.json()["items"] if i["id"] == big["id"]]
            assert (item["topic"], item["key"], item["sequence"]) == (topic, key, 2)
            assert item["error"].startswith("MessageSizeTooLargeError")
            assert (await api.client.get("/v1/outbox/parked")).status_code == 401

            # The cause fixed, the row is re-queued and published; re-queued twice, a 404.
            await _topic(services.kafka_bootstrap, topic, 4 * TOPIC_LIMIT)
            retry = f"/v1/outbox/parked/{big['id']}/retry"
            assert (await api.client.post(retry, headers=ADMIN)).status_code == 202
            assert (await api.client.post(retry, headers=ADMIN)).status_code == 404
        await _relay_until_settled(relay, engine, district)
        assert all(r["sent_at"] is not None for r in await _rows(engine, district))
        published = await read_records(services.kafka_bootstrap, topic)
        assert [(r.key.decode(), dict(r.headers)["ce_sequence"]) for r in published][-1] == (
            key,
            b"2",
        )
        await relay.housekeeping()
        assert REGISTRY.get_sample_value("roster_outbox_parked") == 0
    finally:
        await relay.producer.stop()
