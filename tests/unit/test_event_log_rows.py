from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import ConsumerRecord

from consumers.runner import Record
from tests.support.event_log import log_rows


def _record(
    offset: int,
    event_id: str | None,
    received: bytes = b"2026-11-29T10:00:00+00:00",
    partition: int = 4,
) -> Record:
    headers = [
        (b"event-type", b"sections.updated"),
        (b"source", b"poller"),
        (b"received-at", received),
    ]
    if event_id is not None:
        headers.append((b"event-id", event_id.encode()))
    record: Record = ConsumerRecord(
        topic="clever.events.v1",
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"d1",
        value=b"{}",
        checksum=None,
        serialized_key_size=2,
        serialized_value_size=2,
        headers=tuple((k.decode(), v) for k, v in headers),
    )
    return record


def test_rows_carry_position_and_headers() -> None:
    rows = log_rows([_record(7, "e1")])
    assert rows == [
        {
            "event_id": "e1",
            "type": "sections.updated",
            "district_id": "d1",
            "source": "poller",
            "received_at": datetime(2026, 11, 29, 10, tzinfo=UTC),
            "kafka_partition": 4,
            "kafka_offset": 7,
        }
    ]


def test_first_copy_wins_and_records_without_id_are_skipped() -> None:
    rows = log_rows([_record(1, "e1"), _record(2, None), _record(3, "e1")])
    assert [(r["event_id"], r["kafka_offset"]) for r in rows] == [("e1", 1)]


def test_unparseable_received_time_falls_back_to_now() -> None:
    before = datetime.now(UTC)
    rows = log_rows([_record(1, "e1", received=b"yesterday")])
    received = rows[0]["received_at"]
    assert isinstance(received, datetime) and received >= before


def test_database_outages_are_transient_and_bad_data_is_not() -> None:
    from sqlalchemy.exc import DBAPIError, OperationalError

    from consumers.runner import is_transient

    class Driver(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    def wrapped(sqlstate: str) -> DBAPIError:
        return DBAPIError("stmt", {}, Driver(sqlstate))

    assert is_transient(OperationalError("stmt", {}, Exception("gone")))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(wrapped("57P01"))  # admin shutdown
    assert is_transient(wrapped("08006"))  # connection failure
    assert is_transient(wrapped("40P01"))  # deadlock
    assert not is_transient(wrapped("22021"))  # invalid byte sequence: the event is bad
    assert not is_transient(wrapped("23505"))
    assert not is_transient(ValueError("bug"))
