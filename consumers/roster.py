"""The roster consumer's handler: applies a batch of Clever events to the roster database.

Per batch, inside the runner's one transaction:
1. decode every record (a record that is not a valid Clever event is dead-lettered at once);
2. skip event ids already settled (redelivery, replay: nothing changes);
3. with the batch's districts locked, apply the rest to the roster (service/sync/apply.py: the
   stored rows it touches locked, newest-wins planned with the pure rules, the winning rows and
   their memberships written, their downstream messages appended to the outbox, the single-school
   rule re-checked for the students the writes can affect), and record every event's outcome.
The apply runs as one set-based savepoint; if it fails for a reason other than a transient database
error, each event is retried alone in its own savepoint so one poison event cannot block the rest,
and an event that still fails goes to the dead-letter topic with its error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.dead_letters import DeadLetters
from consumers.metrics import APPLIED, APPLY_LATENCY
from consumers.records import Decoded, Poison, decode
from consumers.runner import Record, is_transient
from schemas import kafka_headers as h
from service.db.uow import UnitOfWork
from service.events import store as events
from service.programs import store as programs
from service.roster import store
from service.roster.rules import Outcome
from service.sync.apply import apply_events

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    """The error without the statement or its parameters (they may hold personal data): for a
    database error, the driver's own message (`invalid byte sequence ...`)."""
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line[:200]}"


@dataclass
class BatchResult:
    """What a committed batch leaves to do: its outcome rows (metrics), the events it skipped as
    settled, and the dead letters to publish once the transaction has committed (`sent` once
    Kafka acknowledged them, so a retried after-commit step does not send them again)."""

    rows: list[dict[str, Any]]
    skipped: int
    dead_letters: list[Poison]
    sent: bool = False


class RosterApplier:
    def __init__(self, dead_letters: DeadLetters, *, attempts: int = 2) -> None:
        self.dead_letters = dead_letters
        self.attempts = attempts

    async def handle(self, uow: UnitOfWork, records: Sequence[Record]) -> BatchResult:
        decoded = [decode(r) for r in records]
        poison = [d for d in decoded if isinstance(d, Poison)]
        good = [d for d in decoded if isinstance(d, Decoded)]
        conn = uow.connection
        # Locks first, then what is settled: a zombie (a consumer still finishing a batch after
        # its partitions moved) waits here for the new owner's commit, then sees its outcomes
        # and skips them, instead of re-deciding them (`stale`) against its own writes.
        # Every record's district, undecodable ones too (by their key): a zombie's poison waits
        # as well, and finds the owner's dead-letter rows.
        districts = {d.event.district_id for d in good}
        districts |= {(p.record.key or b"").decode("utf-8", "replace") for p in poison}
        await programs.lock_assignments_shared(conn)
        await store.lock_districts(conn, districts)
        ids = [d.event.id for d in good] + [p.event_id for p in poison if p.event_id]
        settled = await events.settled_events(conn, ids)
        # Dead letters whose record Kafka never acknowledged (a crash after the commit): sent now.
        pending = {i for i, s in settled.items() if s.pending and s.status == "dead_lettered"}
        resend = [p for p in poison if p.event_id in pending]
        resend += [
            Poison(d.record, d.headers, d.event.id, settled[d.event.id].error or "")
            for d in good
            if d.event.id in pending
        ]
        poison = [p for p in poison if p.event_id is None or p.event_id not in settled]
        todo: list[Decoded] = []
        seen: set[str] = set(settled)
        for d in good:  # at most one copy of an event id per batch, none already settled
            if d.event.id not in seen:
                seen.add(d.event.id)
                todo.append(d)

        rows: list[dict[str, Any]] = []
        try:
            async with conn.begin_nested():
                rows = await self._apply(uow, todo)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning(
                "batch apply failed; applying its events one by one",
                extra={"error": type(exc).__name__, "events": len(todo)},
            )
            rows, failed = await self._apply_one_by_one(uow, todo)
            poison += failed

        await events.record_outcomes(conn, rows)
        dead_rows = [_dead_row(p) for p in poison if p.event_id]
        await events.record_outcomes(conn, dead_rows)
        # Counted once the runner reports the commit (a rolled-back batch is applied again).
        return BatchResult(rows + dead_rows, len(good) - len(todo), poison + resend)

    async def after_commit(self, engine: AsyncEngine, result: BatchResult) -> None:
        """Publishes the batch's dead letters, now that their `dead_lettered` status is
        committed (so a batch retried after a failed commit never sends one twice), then clears
        their pending mark. A failure here is transient: the runner retries this step, and a
        crash before it leaves the batch's offsets uncommitted, so the batch is read again and
        the events still marked pending are sent then."""
        dead = result.dead_letters
        if not dead:
            return
        if not result.sent:
            await self.dead_letters.send(dead)
            result.sent = True
        async with UnitOfWork(engine) as uow:
            await events.dead_letters_sent(uow.connection, [p.event_id for p in dead if p.event_id])
            await uow.commit()

    def committed(self, result: BatchResult) -> None:
        now = datetime.now(UTC)
        counts: dict[str, int] = {"skipped": result.skipped}
        for row in result.rows:
            status = row["status"]
            counts[status] = counts.get(status, 0) + 1
            if status != "dead_lettered":
                APPLY_LATENCY.observe(max(0.0, (now - row["received_at"]).total_seconds()))
        for status, count in counts.items():  # one labelled increment per status, not per row
            APPLIED.labels(status).inc(count)

    async def _apply_one_by_one(
        self, uow: UnitOfWork, todo: Sequence[Decoded]
    ) -> tuple[list[dict[str, Any]], list[Poison]]:
        rows: list[dict[str, Any]] = []
        failed: list[Poison] = []
        for item in todo:
            error = ""
            for _ in range(self.attempts):
                try:
                    async with uow.connection.begin_nested():
                        rows += await self._apply(uow, [item])
                    break
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    error = f"apply failed: {describe(exc)}"
            else:
                log.error(
                    "event dead-lettered",
                    extra={
                        "event_id": item.event.id,
                        "district_id": item.event.district_id,
                        "error": error,
                    },
                )
                failed.append(Poison(item.record, item.headers, item.event.id, error))
        return rows, failed

    async def _apply(self, uow: UnitOfWork, items: Sequence[Decoded]) -> list[dict[str, Any]]:
        """The roster's work (service/sync/apply.py), then each event's outcome row."""
        outcomes = await apply_events(uow.connection, items)
        now = datetime.now(UTC)
        return [_outcome_row(d, outcomes[d.event.id], now) for d in items if d.event.id in outcomes]


def _outcome_row(item: Decoded, outcome: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "event_id": item.event.id,
        "type": item.event.type,
        "district_id": item.event.district_id,
        "source": item.headers.get(h.SOURCE, "unknown"),
        "received_at": h.received_at(item.headers.get(h.RECEIVED_AT)),
        "status": outcome.value,
        "error": None,
        "applied_at": now if outcome is Outcome.APPLIED else None,
        "kafka_partition": item.record.partition,
        "kafka_offset": item.record.offset,
    }


def _dead_row(poison: Poison) -> dict[str, Any]:
    return {
        "event_id": poison.event_id,
        "type": poison.headers.get(h.EVENT_TYPE, "unknown"),
        "district_id": (poison.record.key or b"").decode("utf-8", "replace"),
        "source": poison.headers.get(h.SOURCE, "unknown"),
        "received_at": h.received_at(poison.headers.get(h.RECEIVED_AT)),
        "status": "dead_lettered",
        "error": poison.error,
        "applied_at": None,
        "kafka_partition": poison.record.partition,
        "kafka_offset": poison.record.offset,
        "dead_letter_pending": True,  # until after_commit has its record acknowledged
    }
