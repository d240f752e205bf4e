"""One simulated district: its records by kind, the records it no longer shares (deleted or
unshared, kept to be re-shared), its events feed, and the simulator's clock and id sources."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from devstack.simulator.store import LIST_KINDS, Collection, Event, EventFeed


def stamp(at: datetime) -> str:
    """Clever's time format: UTC, milliseconds, `Z`."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Clock:
    """The simulator's now: the real time plus an offset (to age events past 30 days), never
    going back and never giving one millisecond twice, so that every change is newer than the
    one before it."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def tick(self) -> datetime:
        now = self.now()
        at = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if at <= self._last:
            at = self._last + timedelta(milliseconds=1)
        self._last = at
        return at


class EventIds:
    """24-hex event ids that increase: a fixed prefix from the seed, then a counter."""

    def __init__(self, rng: random.Random) -> None:
        self._prefix = f"{rng.getrandbits(32):08x}"
        self._next = 1

    def __call__(self) -> str:
        value = f"{self._prefix}{self._next:016x}"
        self._next += 1
        return value


@dataclass
class Gone:
    """A record no longer in the lists: deleted at the source, or no longer shared (then it can
    be shared again)."""

    kind: str
    record: dict[str, Any]
    unshared: bool


@dataclass
class SimDistrict:
    id: str
    name: str
    token: str | None  # None: revoked, no token listed
    rng: random.Random  # this district's changes draw from it (seeding has its own)
    collections: dict[str, Collection] = field(
        default_factory=lambda: {kind: Collection(kind) for kind in LIST_KINDS}
    )
    gone: dict[str, Gone] = field(default_factory=dict)
    feed: EventFeed = field(default_factory=EventFeed)

    def kind(self, kind: str) -> Collection:
        return self.collections[kind]

    def find(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        for kind, collection in self.collections.items():
            record = collection.get(record_id)
            if record is not None:
                return kind, record
        return None


class Emitter:
    """Writes a change: the record (in its collection, or out of the lists) AND its event."""

    def __init__(self, clock: Clock, ids: EventIds) -> None:
        self.clock = clock
        self.ids = ids

    def emit(
        self,
        district: SimDistrict,
        kind: str,
        action: str,
        record: dict[str, Any],
        previous: dict[str, Any] | None = None,
        *,
        touch: bool = True,
    ) -> Event:
        """The event `<kind>.<action>` for `record` as it now is; `touch` sets its last_modified
        to the event's time (a change at the source; an unshare or re-share keeps it)."""
        at = self.clock.tick()
        if touch:
            record["last_modified"] = stamp(at)
        data: dict[str, Any] = {"object": record}
        if previous:
            data["previous_attributes"] = previous
        event = {"id": self.ids(), "type": f"{kind}.{action}", "created": stamp(at), "data": data}
        return district.feed.append(event, at)

    def created(self, district: SimDistrict, kind: str, record: dict[str, Any]) -> Event:
        at = stamp(self.clock.now())
        record.setdefault("created", at)
        district.kind(kind).put(record)
        return self.emit(district, kind, "created", record)

    def updated(
        self, district: SimDistrict, kind: str, record: dict[str, Any], before: dict[str, Any]
    ) -> Event:
        """`before`: a copy of the record taken before the change (for previous_attributes)."""
        previous = {key: value for key, value in before.items() if record.get(key) != value}
        previous.pop("last_modified", None)
        district.kind(kind).put(record)
        return self.emit(district, kind, "updated", record, previous)

    def deleted(self, district: SimDistrict, kind: str, record_id: str, *, unshared: bool) -> Event:
        record = district.kind(kind).remove(record_id)
        district.gone[record_id] = Gone(kind, record, unshared)
        # A delete carries the record as it last was (its last_modified too); the event's later
        # `created` makes it the newer version.
        return self.emit(district, kind, "deleted", record, touch=False)

    def reshared(self, district: SimDistrict, record_id: str) -> Event:
        gone = district.gone.pop(record_id)
        district.kind(gone.kind).put(gone.record)
        return self.emit(district, gone.kind, "created", gone.record, touch=False)


def snapshot(record: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(record)
