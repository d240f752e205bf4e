"""The header names in schemas/kafka_headers.py: redrive's prefix rule holds for them."""

from __future__ import annotations

from schemas import kafka_headers as h


def test_redrive_drops_exactly_the_dead_letter_headers() -> None:
    dead_letter = {h.DLQ_ERROR, h.DLQ_ORIGIN, h.DLQ_AT}
    inbound = {h.EVENT_ID, h.EVENT_TYPE, h.SOURCE, h.RECEIVED_AT, h.TRACEPARENT, h.REDRIVEN_AT}
    assert all(name.startswith(h.DLQ_PREFIX) for name in dead_letter)
    assert not any(name.startswith(h.DLQ_PREFIX) for name in inbound)
    assert len(dead_letter) == 3
