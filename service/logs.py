"""Structured JSON logs on stderr: one object per line, with any `extra=` fields merged in.

Callers pass identifiers (event id, district) as extras, never secrets or students' personal data.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every record has, plus uvicorn's ANSI-coloured duplicate of the message.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_library_loggers()


def quiet_library_loggers() -> None:
    """Library loggers that no service log level opens up:
    - aiokafka logs every reconnect attempt at ERROR (our own code reports broker outages), and
      its producer logs each record's key and value at DEBUG: a roster's personal data;
    - uvicorn's access log repeats what the request metrics count;
    - httpx logs every request to Clever at INFO, httpcore each connection step at DEBUG: the
      poller's metrics count them, and the logs stay about our own decisions."""
    floor = max(logging.WARNING, logging.getLogger().level)
    logging.getLogger("aiokafka").setLevel(floor)
    logging.getLogger("uvicorn.access").setLevel(floor)
    logging.getLogger("httpx").setLevel(floor)
    logging.getLogger("httpcore").setLevel(floor)
