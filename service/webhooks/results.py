"""What ingest answers a request: its result, or the dependency that could not do its part."""

from __future__ import annotations

from dataclasses import dataclass


class Unavailable(Exception):
    """A dependency could not do its part in time; nothing unacknowledged was recorded."""

    def __init__(self, dependency: str, detail: str, *, error: str | None = None) -> None:
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency
        self.detail = detail
        self.error = error or f"{dependency}_unavailable"
        self.message = f"{dependency} could not acknowledge in time; retry"


class Overloaded(Unavailable):
    """Too many events already wait for a batch: refused at once rather than queued."""

    def __init__(self, detail: str) -> None:
        super().__init__("ingest", detail, error="overloaded")
        self.message = "too many events are waiting to be made durable; retry"


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    accepted_ids: tuple[str, ...]
