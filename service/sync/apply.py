"""Applies a batch of Clever events to the roster, inside the caller's transaction.

The I/O around the pure rules (`rules.plan_batch`): lock and read the stored versions of the
records the events touch, plan newest-wins, re-check the single-school rule for the applied
events against the roster as it was (alerts, with their messages), then write the winning rows
and their memberships and append their downstream messages to the outbox (none for a write that
leaves its record exactly as stored). The caller (the roster consumer, consumers/roster.py) owns
the rest: decoding, the district locks and the skip of settled events before this runs, the
savepoint around it, retrying events one by one, dead letters, and recording each event's
outcome.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.clever import AnyEvent, Section, User
from service.outbox import store as outbox
from service.programs.changes import change_of
from service.programs.check import check_batch
from service.programs.rules import SectionChange
from service.roster import store
from service.roster.changes import PUBLISHED_ROLES, record_changes
from service.roster.records import (
    record_key,
    record_row,
    section_members,
    user_school_links,
    version_of,
)
from service.roster.rules import (
    Incoming,
    Outcome,
    RecordKey,
    Version,
    may_be_unchanged,
    plan_batch,
)


class Arrival(Protocol):
    """An event as the consumer received it."""

    @property
    def event(self) -> AnyEvent: ...

    @property
    def event_json(self) -> str:
        """The whole event's JSON as received (stored as is: see `store.upsert_records`)."""
        ...

    @property
    def announce(self) -> bool:
        """Downstream hears of its write even if it leaves the record as stored (a backfill an
        operator asked for)."""
        ...


async def apply_events(conn: AsyncConnection, items: Sequence[Arrival]) -> dict[str, Outcome]:
    """Applies `items` (no event id settled before, each id once) and returns each event's
    outcome by event id. Call with the batch's districts locked (`store.lock_districts`)."""
    if not items:
        return {}
    ids_by_kind: dict[str, set[str]] = defaultdict(set)
    for d in items:
        kind, record_id = record_key(d.event)
        ids_by_kind[kind].add(record_id)
    stored = {}
    for kind, ids in sorted(ids_by_kind.items()):
        for record_id, version in (await store.stored_versions(conn, kind, list(ids))).items():
            stored[(kind, record_id)] = version

    plan = plan_batch(
        stored,
        [Incoming(d.event.id, record_key(d.event), version_of(d.event), d) for d in items],
    )
    # Writes that leave the record as stored publish nothing downstream (see `_unchanged`).
    unchanged = await _unchanged(conn, plan.writes, stored)
    rows_by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    members: dict[str, list[tuple[str, str]]] = {}
    links: dict[str, list[tuple[str, str]]] = {}
    lacking: dict[str, list[str]] = defaultdict(list)  # published role -> users without it
    for (kind, record_id), write in plan.writes.items():
        event = write.payload.event
        rows_by_kind[kind].append(record_row(event, write.payload.event_json))
        obj = event.data.object
        if type(obj) is Section:
            members[record_id] = section_members(obj)
        elif type(obj) is User:
            links[record_id] = user_school_links(obj)
            if not write.version.delete:
                for role in PUBLISHED_ROLES:
                    if getattr(obj.roles, role) is None:
                        lacking[role].append(record_id)
    changes = [
        change
        for d in items
        if plan.outcomes.get(d.event.id) is Outcome.APPLIED
        and (change := change_of(d.event)) is not None
    ]
    # The stored student lists of the sections the batch writes or changes, read once (before
    # any write) for both the single-school check and the enrollment diff.
    changed = {c.section_id for c in changes if isinstance(c, SectionChange)}
    students_of = await store.section_students(conn, sorted(changed | set(members)))
    # The single-school rule, per applied event in order, against the roster as it was.
    await check_batch(conn, changes, students_of)
    # Enrollments are the difference between a section's students before and after; a section
    # not stored, or stored as a tombstone, had none.
    before = {
        sid: students_of[sid]
        for sid in members
        if not _deleted(stored.get(("sections", sid))) and sid in students_of
    }
    # Users whose write drops a role that publishes downstream (student, teacher).
    previous_users = await store.users_losing_roles(conn, lacking)
    messages = [
        message
        for (kind, record_id), write in plan.writes.items()
        if (kind, record_id) not in unchanged
        for message in record_changes(
            write.payload.event, before.get(record_id, ()), previous_users.get(record_id)
        )
    ]
    for kind, kind_rows in sorted(rows_by_kind.items()):
        await store.upsert_records(conn, kind, kind_rows)
    await store.replace_section_members(conn, members)
    await store.replace_user_schools(conn, links)
    await outbox.append(conn, messages)
    return plan.outcomes


async def _unchanged(
    conn: AsyncConnection,
    writes: Mapping[RecordKey, Incoming[Arrival]],
    stored: Mapping[RecordKey, Version],
) -> set[RecordKey]:
    """The writes whose object is exactly the one stored, live: a re-sync's backfill, or a
    record Clever sends again unchanged under a new event id. The write still moves the version
    (newest wins as ever), but downstream learns nothing new, so it is told nothing (a re-sync of
    a 50,000-student district would otherwise re-announce every record), unless its event says
    `announce` (a backfill an operator asked for: the way to repair downstream, a subscriber that
    lost its state or a parked message, is to re-announce). Only a write at the
    stored `last_modified` can be one (Clever moves it with every change), so only those
    records' objects are read and compared."""
    candidates: dict[str, dict[str, Incoming[Arrival]]] = defaultdict(dict)
    for key, write in writes.items():
        before = stored.get(key)
        if may_be_unchanged(before, write.version) and not write.payload.announce:
            candidates[key[0]][key[1]] = write
    unchanged: set[RecordKey] = set()
    for kind, by_id in sorted(candidates.items()):
        events = {record_id: write.payload.event_json for record_id, write in by_id.items()}
        unchanged.update((kind, r) for r in await store.stored_as(conn, kind, events))
    return unchanged


def _deleted(version: Version | None) -> bool:
    return version is None or version.delete
