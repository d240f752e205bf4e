"""The roster's rules, as pure functions: which version of a record wins, and what a batch does.

No I/O here: the consumer loads what is stored, asks these functions what to do, and writes the
answer. The contract's rules this module holds:

- Newest wins, per record. An event's version is its object's `last_modified` (else the event's
  `created`), then the event's `created`. Versions are totally ordered by (time, event created,
  is-delete, event id): at an equal `last_modified` the later event wins, so a record shared
  again after its delete (Clever sends the `*.created` with the `last_modified` it had when it
  was deleted) comes back; only at equal times as well does a delete beat an update, and the
  event id breaks the last tie. Equal versions resolve the same way whatever order the events
  arrive in, so the final state never depends on arrival order. The SQL guard in
  `service/roster/store.upsert_records` compares the same four columns in the same order.
- An event not newer than what is stored is `stale` and changes nothing. A delete is a tombstone:
  it keeps its version, so older updates never bring the record back; a newer create or update
  does.
- Replays change nothing: an event id that was settled before is skipped (the consumer's job),
  and re-deciding the same event against its own stored version is `stale`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar


@dataclass(frozen=True, order=True)
class Version:
    """A record version; the field order is the comparison order (see the module's rules)."""

    at: datetime  # the object's last_modified, else the event's created
    created: datetime  # the event's created
    delete: bool
    event_id: str


class Outcome(StrEnum):
    APPLIED = "applied"
    STALE = "stale"


def decide(stored: Version | None, incoming: Version) -> Outcome:
    """Whether an incoming version replaces the stored one."""
    return Outcome.APPLIED if stored is None or incoming > stored else Outcome.STALE


def may_be_unchanged(stored: Version | None, incoming: Version) -> bool:
    """A write of a live record, itself live, at the stored `last_modified`: it may carry the very
    object stored (Clever moves `last_modified` with every change; a re-sync sends it again).
    Only such writes are worth comparing whole before telling downstream of them."""
    return (
        stored is not None
        and not stored.delete
        and not incoming.delete
        and stored.at == incoming.at
    )


RecordKey = tuple[str, str]  # (record kind, record id)
E = TypeVar("E")


@dataclass(frozen=True)
class Incoming(Generic[E]):
    """One event as the planner sees it: which record it touches and its version."""

    event_id: str
    record: RecordKey
    version: Version
    payload: E


@dataclass(frozen=True)
class Plan(Generic[E]):
    """What a batch does: each event's outcome, and the one write per record that changes."""

    outcomes: dict[str, Outcome]
    writes: dict[RecordKey, Incoming[E]]


def plan_batch(stored: Mapping[RecordKey, Version], events: Sequence[Incoming[E]]) -> Plan[E]:
    """Applies newest-wins to a batch against the stored versions.

    Within a batch only the newest event of each record is written. Every event newer than what
    was stored counts as applied (in sequence it would have been, before a newer one replaced
    it); events not newer than the stored version, or than an earlier event of the batch that
    they lose to, are stale.
    """
    outcomes: dict[str, Outcome] = {}
    current: dict[RecordKey, Version] = dict(stored)
    writes: dict[RecordKey, Incoming[E]] = {}
    for event in events:
        if event.event_id in outcomes:
            continue  # the same event twice in one batch: settled by its first copy
        outcome = decide(current.get(event.record), event.version)
        outcomes[event.event_id] = outcome
        if outcome is Outcome.APPLIED:
            current[event.record] = event.version
            writes[event.record] = event
    return Plan(outcomes, writes)


def student_schools(
    role_schools: Iterable[str],
    section_schools: Iterable[str],
    deleted_schools: Iterable[str] = (),
) -> list[str]:
    """A student's schools: those of the newest user record, and of the non-deleted sections
    that list the student (the caller passes only non-deleted sections). A school whose own
    record is deleted (no longer shared) is not counted: its students are re-checked when that
    happens. The view `student_school_links` holds the two sources in SQL."""
    return sorted((set(role_schools) | set(section_schools)) - set(deleted_schools))
