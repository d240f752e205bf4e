"""The simulator's records and event feeds, kept ready to serve: every list sorted by id (Clever's
paging order) and every item cached as the bytes of its envelope entry, so that a page of 10,000
records is a slice and one bytes join."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

LIST_KINDS = ("districts", "schools", "terms", "courses", "sections", "users")
ROLES = ("student", "teacher", "staff", "district_admin", "contact")


def item_bytes(kind: str, record: dict[str, Any]) -> bytes:
    """One entry of a list page: `{"data": <record>, "uri": "/v3.0/<kind>/<id>"}`."""
    return b'{"data":%s,"uri":"/v3.0/%s/%s"}' % (
        orjson.dumps(record),
        kind.encode(),
        record["id"].encode(),
    )


class Collection:
    """The live (shared) records of one kind of one district. Users are also indexed by role
    (`/users?role=`); a user holding two roles is in both lists."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.records: dict[str, dict[str, Any]] = {}
        self._ids: list[str] = []
        self._by_role: dict[str, list[str]] = {role: [] for role in ROLES}
        self._cache: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self.records

    def get(self, record_id: str) -> dict[str, Any] | None:
        return self.records.get(record_id)

    def put(self, record: dict[str, Any]) -> None:
        """Adds or replaces a record (call again after changing one in place)."""
        record_id = record["id"]
        old = self.records.get(record_id)
        if old is None:
            bisect.insort(self._ids, record_id)
        self._reindex_roles(record_id, old, record)
        self.records[record_id] = record
        self._cache.pop(record_id, None)

    def load(self, records: list[dict[str, Any]]) -> None:
        """Adds many new records at once (seeding: one sort instead of an insort each)."""
        for record in records:
            self.records[record["id"]] = record
            if self.kind == "users":
                for role in record.get("roles", {}):
                    self._by_role[role].append(record["id"])
        self._ids = sorted(self.records)
        for ids in self._by_role.values():
            ids.sort()

    def remove(self, record_id: str) -> dict[str, Any]:
        record = self.records.pop(record_id)
        _discard(self._ids, record_id)
        self._reindex_roles(record_id, record, None)
        self._cache.pop(record_id, None)
        return record

    def ids(self, role: str | None = None) -> list[str]:
        """Sorted ids (of one role's users when `role` is given): not to be changed."""
        return self._ids if role is None else self._by_role.get(role, [])

    def item(self, record_id: str) -> bytes:
        cached = self._cache.get(record_id)
        if cached is None:
            cached = self._cache[record_id] = item_bytes(self.kind, self.records[record_id])
        return cached

    def _reindex_roles(
        self, record_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        if self.kind != "users":
            return
        before = set(old.get("roles", {})) if old else set()
        after = set(new.get("roles", {})) if new else set()
        for role in before - after:
            _discard(self._by_role[role], record_id)
        for role in after - before:
            bisect.insort(self._by_role[role], record_id)


def _discard(ids: list[str], record_id: str) -> None:
    at = bisect.bisect_left(ids, record_id)
    if at < len(ids) and ids[at] == record_id:
        del ids[at]


@dataclass(frozen=True)
class Event:
    id: str
    created: datetime
    type: str
    item: bytes  # the list entry: {"data": <event>, "uri": ...}


class EventFeed:
    """One district's events, oldest first; ids increase with time, so id order is time order."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._events: list[Event] = []

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def append(self, event: dict[str, Any], created: datetime) -> Event:
        if self.ids and event["id"] <= self.ids[-1]:
            raise ValueError("event ids must increase")
        item = b'{"data":%s,"uri":"/v3.0/events/%s"}' % (
            orjson.dumps(event),
            event["id"].encode(),
        )
        kept = Event(event["id"], created, event["type"], item)
        self.ids.append(kept.id)
        self._events.append(kept)
        return kept

    def has(self, event_id: str) -> bool:
        at = bisect.bisect_left(self.ids, event_id)
        return at < len(self.ids) and self.ids[at] == event_id

    def item(self, event_id: str) -> bytes:
        return self._events[bisect.bisect_left(self.ids, event_id)].item

    def expire(self, before: datetime) -> int:
        """Forgets the events created before `before` (the oldest come first); how many."""
        gone = 0
        while gone < len(self._events) and self._events[gone].created < before:
            gone += 1
        if gone:
            del self._events[:gone]
            del self.ids[:gone]
        return gone
