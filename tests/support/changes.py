"""Reads the downstream topics back as CloudEvents, for tests of exactly what was published."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from tests.support.topic import read_records


@dataclass(frozen=True)
class Received:
    key: str
    type: str
    id: str
    sequence: int
    district_id: str
    data: dict[str, Any]
    attributes: dict[str, Any]
    partition: int
    offset: int


async def read_cloudevents(
    bootstrap: str, topic: str, district_id: str | None = None, timeout: float = 30.0
) -> list[Received]:
    """Every message on `topic` up to its current end (or a district's), parsed with the
    CloudEvents SDK from Kafka binary mode, in partition and offset order."""
    found: list[Received] = []
    for r in await read_records(bootstrap, topic, timeout):
        event = from_binary(KafkaMessage(dict(r.headers), r.key, r.value), JSONFormat())
        attributes = event.get_attributes()
        if district_id is not None and attributes["districtid"] != district_id:
            continue
        data = event.get_data()
        assert isinstance(data, dict)
        found.append(
            Received(
                r.key.decode(),
                event.get_type(),
                event.get_id(),
                int(attributes["sequence"]),
                attributes["districtid"],
                data,
                attributes,
                r.partition,
                r.offset,
            )
        )
    return found
