"""The service's logging configuration never opens a library logger that writes personal data."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from service.logs import configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    names = ("aiokafka", "uvicorn.access")
    saved = (root.handlers[:], root.level, {name: logging.getLogger(name).level for name in names})
    try:
        yield
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restored_logging")
def test_debug_level_leaves_the_kafka_producer_quiet() -> None:
    # aiokafka's producer logs each record's key and value (a student's name, email, birth
    # date) at DEBUG.
    configure_logging("DEBUG")
    assert logging.getLogger("service.webhooks").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.INFO)
    assert logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.WARNING)


@pytest.mark.usefixtures("restored_logging")
def test_a_quieter_service_level_applies_to_libraries_too() -> None:
    configure_logging("ERROR")
    assert not logging.getLogger("aiokafka").isEnabledFor(logging.WARNING)
