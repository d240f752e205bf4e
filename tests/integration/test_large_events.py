"""Events up to the door's size limit go through the whole pipeline, on the real broker and
database: the producers, every topic and the consumers agree on the largest record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clever import EVENT_ADAPTER
from service.kafka.config import producer_options
from service.kafka.limits import MAX_RECORD_BYTES
from service.kafka.topics import MAX_MESSAGE_BYTES, ROSTER_CHANGES, TopicSpec, ensure_topics
from service.outbox.relay import kafka_message
from service.outbox.store import Pending
from service.roster.changes import record_changes
from tests.integration.conftest import Api
from tests.support.factory import Factory
from tests.support.pipeline import fresh_group, run_consumer, settled
from tests.support.services import Services
from tests.support.topic import read_records
from tests.support.webhook import ADMIN_TOKEN, encode, signed_headers

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
MiB = 1024 * 1024


async def test_a_section_of_ninety_thousand_students_is_accepted_then_applied(
    api: Api, services: Services, engine: AsyncEngine
) -> None:
    factory = Factory()
    event = factory.event("sections.updated")
    students = sorted({factory.oid() for _ in range(90_000)})
    event["data"]["object"]["students"] = students
    body = encode(event)
    assert 2 * MiB < len(body) < 3 * MiB  # over aiokafka's and the broker's 1 MiB defaults

    group = await fresh_group(services, "large")
    response = await api.client.post("/webhooks/clever", content=body, headers=signed_headers(body))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}

    await run_consumer(services, engine, group, settled(engine, {event["id"]}), timeout=240)
    status = (await api.client.get(f"/v1/events/{event['id']}", headers=ADMIN)).json()
    assert (status["status"], status["error"]) == ("applied", None)
    section_id = event["data"]["object"]["id"]
    section = (await api.client.get(f"/v1/sections/{section_id}", headers=ADMIN)).json()
    assert section["student_ids"] == students


async def test_the_section_message_of_a_large_section_fits_its_topic(
    services: Services,
) -> None:
    """The relay publishes a section's downstream message whole: it must fit the producer and a
    topic made to the changes topic's spec."""
    factory = Factory()
    event = factory.event("sections.updated")
    event["data"]["object"]["students"] = [factory.oid() for _ in range(90_000)]
    section, *_ = record_changes(EVENT_ADAPTER.validate_python(event))
    data = orjson.dumps({**section.data, "sequence": 1})  # as the outbox stores it
    row = Pending(
        1,
        ROSTER_CHANGES.name,
        section.key,
        section.type,
        section.district_id,
        1,
        data,
        datetime.now(UTC),
    )
    key, value, headers = kafka_message(row)
    assert len(value) > 2 * MiB
    topic = f"changes-size-{uuid.uuid4().hex[:8]}"
    await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 1, ROSTER_CHANGES.config),))
    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()
    (record,) = await read_records(services.kafka_bootstrap, topic)
    assert record.value == value


async def _limit(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
        return {entry[0]: entry[1] for entry in response.resources[0][4]}
    finally:
        await admin.close()


async def test_an_existing_topic_with_a_smaller_record_limit_is_raised_keeping_its_settings(
    services: Services,
) -> None:
    topic = f"old-limit-{uuid.uuid4().hex[:8]}"
    old = {MAX_MESSAGE_BYTES: str(MiB), "retention.ms": "123456789"}
    await ensure_topics(services.kafka_bootstrap, (TopicSpec(topic, 1, old),))
    assert (await _limit(services.kafka_bootstrap, topic))[MAX_MESSAGE_BYTES] == str(MiB)

    spec = TopicSpec(topic, 1, {MAX_MESSAGE_BYTES: str(MAX_RECORD_BYTES), "retention.ms": "1"})
    await ensure_topics(services.kafka_bootstrap, (spec,))  # as a newer version starts
    configs = await _limit(services.kafka_bootstrap, topic)
    assert configs[MAX_MESSAGE_BYTES] == str(MAX_RECORD_BYTES)
    assert configs["retention.ms"] == "123456789"  # an existing topic's own settings are kept

    producer = AIOKafkaProducer(**producer_options(services.kafka_bootstrap))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x" * (3 * MiB), key=b"k")
    finally:
        await producer.stop()
