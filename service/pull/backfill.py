"""A backfill: one full sync of a district from Clever's Data API, published as events.

`run_backfill` runs one row of `backfills` (service/pull/backfills.py) to its end, in this order
(Clever's own guide for a district sync, clever.md "Pulling from Clever"):

1. It claims the row for its runner (a row nobody runs, or whose runner's heartbeat is stale:
   an interrupted run is resumed under the same id), and sets the district `backfilling`.
2. It reads the district's newest event id BEFORE any list and stores it on the row; a resumed
   run keeps the stored one. The district's cursor starts there once the run ends, so whatever
   changes while the lists are read is read again from the Events API (newest wins makes the
   overlap harmless).
3. It pages every list (district, schools, terms, courses, sections, users of every role; a
   user listed under two roles is published once) and publishes each record as the event
   `{"id": sha256("<backfill id>:<kind>:<record id>:updated")[:24], "type": "<kind>.updated",
   "created": <when its page was read>, "data": {"object": <the record as Clever sent it>}}`
   through the webhook door's `Ingestor` (source `backfill`), in chunks of at most 5,000.
   The ids are deterministic per run and record, so a resumed run publishes nothing twice: the
   door's dedupe (the event log) answers each id seen before as a duplicate. A run an operator
   asked for (reason `api` or `cli`) sends its events with the `announce` header: the consumer
   then tells downstream of every record, even one left exactly as stored (re-announcing a
   district); an automatic run's unchanged records publish nothing downstream. A record that is
   no Clever record the service can take (it fails the event validation) is counted `invalid`
   per kind, logged by id, and not published; the rest go on.
4. Archive (unless the row says `archive_missing` false). First it waits until every event of
   the district received before the run first started is applied: a consumer behind would
   otherwise create, after this step looked, a record the lists no longer return (it would
   never be archived). (The run's own events need no wait: they only update records the lists
   returned; while they are unapplied, records new to the roster are missing from the guard's
   live count, which makes the guard stricter, not looser.) If they are not applied within
   SETTLE_SECONDS, the run archives nothing and ends `guarded` with the reason as its error
   (its cursor still set: failing it would make the next run publish the whole district again
   onto the backlog that made it wait); a later run archives.
   Then per kind (schools, terms, courses, sections, users), the roster's live rows of the
   district that this run did not return and whose stored version came from an event received
   before the run first started (so a record an event created meanwhile is not archived) are
   missing. If, for any kind, more than `ROSTER_BACKFILL_MAX_ARCHIVE_SHARE` of its live rows
   are missing and the row does not say `force`, nothing is archived and the
   run ends `guarded` (a misconfigured SIS can briefly share nothing). Otherwise each missing
   record is published as `<kind>.deleted` carrying the object the roster holds, id
   sha256("...:deleted")[:24], created when its kind's list began to be read (a re-share
   Clever makes after that, even one the poller brings only after the archive, is newer and
   wins), or 1 ms after the stored version's event if that is later (Clever's clock ahead of
   ours: a delete older than what it deletes would be stale); a record that comes back later
   is restored by its next event.
5. In one transaction: the district's cursor = the start event id, its state `polling` (fenced
   on the lease when run by a lease holder), and the row `succeeded` or `guarded`. A failure
   ends the row `failed` with its error text (the district keeps no cursor from it).

While it runs, a heartbeat writes the counts per kind ({read, published}) every second; the
heartbeat and every write of the run are fenced on the runner, so a run that another runner
took over (after its heartbeat went stale) stops with `BackfillTakenOver`. A cancelled run
(its poller lost the lease, or the process stops) leaves the row `running`: the next holder of
the district's lease resumes it once the heartbeat is stale.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from service.clever.client import CleverClient
from service.clever.errors import CleverError, TokenRejected
from service.db.uow import UnitOfWork
from service.pull import backfills
from service.pull import store as sync
from service.pull.metrics import BACKFILLS
from service.retry import retrying
from service.settings import Settings
from service.webhooks.delivery import Delivery
from service.webhooks.ingest import Ingestor
from service.webhooks.parse import BodyRejected, ParsedEvent, parse_body
from service.webhooks.results import Unavailable

log = logging.getLogger(__name__)

SOURCE = "backfill"
# The lists a backfill pages, in this order: (kind, path, query).
USER_ROLES = ("student", "teacher", "staff", "district_admin", "contact")
LISTS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("districts", "/v3.0/districts", {}),
    ("schools", "/v3.0/schools", {}),
    ("terms", "/v3.0/terms", {}),
    ("courses", "/v3.0/courses", {}),
    ("sections", "/v3.0/sections", {}),
    *(("users", "/v3.0/users", {"role": role}) for role in USER_ROLES),
)
KINDS = ("districts", "schools", "terms", "courses", "sections", "users")
# What the archive step may archive (a district is never archived by its own backfill).
ARCHIVED_KINDS = ("schools", "terms", "courses", "sections", "users")
CHUNK_EVENTS = 5_000  # events per ingest call (the Ingestor's batch size)
CHUNKS_IN_FLIGHT = 2  # chunks published at once while the next pages are read
PROGRESS_SECONDS = 1.0  # how often the counts and the heartbeat are written
PUBLISH_ATTEMPTS = 6  # per chunk, with doubling waits (0.5 s to 8 s) between them
SETTLE_SECONDS = 600.0  # the longest wait for the district's events to be applied before archiving
SETTLE_POLL_SECONDS = 0.5

_random = random.Random()  # noqa: S311 (trace ids: unique, not secret)


class BackfillNotRunnable(Exception):
    """The row is not running, or another runner runs it (its heartbeat is fresh)."""


class BackfillTakenOver(Exception):
    """Another runner took the run over (this one's heartbeat had gone stale): this one stops."""


class NotSettled(Exception):
    """Events received before the archive step are still not applied: it cannot tell what is
    missing, so it archives nothing (the run ends `guarded`)."""


class _Outcome(NamedTuple):
    status: str  # succeeded or guarded
    start_event_id: str | None
    missing: dict[str, int]
    archived: dict[str, int]
    error: str | None = None  # why a guarded run archived nothing, when not the share


class LeaseLost(Exception):
    """The district's lease is no longer the runner's: the run stops without ending the row, so
    the next lease holder resumes it."""


@dataclass(frozen=True)
class BackfillResult:
    """How the run ended (`succeeded`, `guarded` or `failed`) and the row as it now is."""

    status: str
    backfill: dict[str, Any]


def event_id(backfill_id: str, kind: str, record_id: str, action: str) -> str:
    """The synthetic event's id: the same for the same run, record and action (24 hex, as
    Clever's ids), so a resumed run's events are the door's duplicates."""
    digest = hashlib.sha256(f"{backfill_id}:{kind}:{record_id}:{action}".encode()).hexdigest()
    return digest[:24]


def synthetic_event(
    backfill_id: str, kind: str, action: str, record: dict[str, Any], created: str
) -> dict[str, Any]:
    return {
        "id": event_id(backfill_id, kind, str(record.get("id")), action),
        "type": f"{kind}.{action}",
        "created": created,
        "data": {"object": record},
    }


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now_iso() -> str:
    return _iso(datetime.now(UTC))


def _after(listed: datetime, stored_created: datetime | None) -> datetime:
    """An archive's event time: when its kind's list began to be read (the record's absence was
    seen then, so a re-share Clever makes later is newer and wins), unless the version it deletes
    is no older (then 1 ms after it, so that the delete is newer than what it deletes)."""
    if stored_created is None or stored_created < listed:
        return listed
    return stored_created + timedelta(milliseconds=1)


async def _settled(
    engine: AsyncEngine,
    backfill_id: str,
    district_id: str,
    received_before: datetime,
    settle_seconds: float,
) -> None:
    """Returns once no event of the district received before `received_before` waits to be
    applied; raises NotSettled after `settle_seconds`."""
    deadline = asyncio.get_running_loop().time() + settle_seconds
    logged = False
    while True:
        async with UnitOfWork(engine) as uow:
            waiting = await backfills.waiting_before(uow.connection, district_id, received_before)
        if not waiting:
            return
        if asyncio.get_running_loop().time() >= deadline:
            raise NotSettled(
                f"archive withheld: {waiting} events of district {district_id} are still not "
                f"applied after {settle_seconds:.0f} s (is the consumer running and caught up, "
                "or a redrive unfinished?); run the backfill again once they are"
            )
        if not logged:
            log.info(
                "backfill waits for earlier events to be applied before archiving",
                extra={"backfill_id": backfill_id, "district_id": district_id, "waiting": waiting},
            )
            logged = True
        await asyncio.sleep(SETTLE_POLL_SECONDS)


def _traceparent() -> str:
    return f"00-{_random.getrandbits(128) or 1:032x}-{_random.getrandbits(64) or 1:016x}-01"


@dataclass
class _Counts:
    by_kind: dict[str, dict[str, int]] = field(
        default_factory=lambda: {kind: {"read": 0, "published": 0} for kind in KINDS}
    )

    def add(self, kind: str, what: str, n: int = 1) -> None:
        counts = self.by_kind.setdefault(kind, {"read": 0, "published": 0})
        counts[what] = counts.get(what, 0) + n

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {kind: dict(counts) for kind, counts in self.by_kind.items()}


class _Publisher:
    """Chunks of synthetic events through the Ingestor, a few at once; each chunk retried on
    `Unavailable` a bounded number of times (the door's dedupe makes a retry safe). Use as an
    async context manager: leaving it by an exception cancels the chunks still on their way."""

    def __init__(
        self,
        ingestor: Ingestor,
        backfill_id: str,
        district_id: str,
        counts: _Counts,
        chunk_events: int,
        announce: bool,
    ) -> None:
        self._ingestor = ingestor
        self._announce = announce
        self._chunk_events = chunk_events
        self._backfill_id = backfill_id
        self._district_id = district_id
        self._counts = counts
        self._chunk: list[tuple[str, ParsedEvent]] = []
        self._slots = asyncio.Semaphore(CHUNKS_IN_FLIGHT)
        self._tasks: list[asyncio.Task[None]] = []
        self._sent = 0
        self._trace = _traceparent()

    async def __aenter__(self) -> _Publisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def parse(self, kind: str, event: dict[str, Any]) -> ParsedEvent | None:
        """The event validated as the door validates a body; None (counted `invalid`, logged
        by record id, never by value) if it fails or names another district."""
        record_id = event["data"]["object"].get("id")
        try:
            (parsed,) = parse_body(orjson.dumps(event), max_events=1)
        except (BodyRejected, orjson.JSONEncodeError) as exc:
            problems = getattr(exc, "problems", [])
            log.warning(
                "backfill record not published: it fails validation",
                extra={
                    "backfill_id": self._backfill_id,
                    "kind": kind,
                    "record_id": record_id if isinstance(record_id, str) else None,
                    "fields": [p.field for p in problems][:5],
                },
            )
            self._counts.add(kind, "invalid")
            return None
        if parsed.district_id != self._district_id:
            log.warning(
                "backfill record not published: it belongs to another district",
                extra={"backfill_id": self._backfill_id, "kind": kind, "record_id": record_id},
            )
            self._counts.add(kind, "invalid")
            return None
        return parsed

    async def add(self, kind: str, parsed: ParsedEvent) -> None:
        self._chunk.append((kind, parsed))
        if len(self._chunk) >= self._chunk_events:
            await self._send()

    async def flush(self) -> None:
        """Sends what is left and waits until every chunk is acknowledged (the first failure
        is raised)."""
        if self._chunk:
            await self._send()
        while self._tasks:
            await self._tasks[0]
            self._tasks.pop(0)

    async def _send(self) -> None:
        chunk, self._chunk = self._chunk, []
        await self._slots.acquire()  # at most CHUNKS_IN_FLIGHT at once: back-pressure on reads
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.remove(task)
            task.result()  # a chunk that failed for good ends the run now
        self._sent += 1
        self._tasks.append(asyncio.create_task(self._publish(self._sent, chunk)))

    async def _publish(self, number: int, chunk: list[tuple[str, ParsedEvent]]) -> None:
        try:
            events = [parsed for _, parsed in chunk]

            async def attempt() -> None:
                delivery = Delivery(
                    source=SOURCE,
                    delivery_id=f"backfill:{self._backfill_id}:{number}",
                    traceparent=self._trace,
                    received_at=datetime.now(UTC),
                    announce=self._announce,
                )
                await self._ingestor.ingest(events, delivery)

            tries = 0

            def on_retry(exc: Exception, wait: float) -> None:
                nonlocal tries
                tries += 1
                if tries >= PUBLISH_ATTEMPTS:
                    raise exc
                log.warning(
                    "backfill chunk not acknowledged; retrying",
                    extra={"backfill_id": self._backfill_id, "error": str(exc), "wait": wait},
                )

            await retrying(
                attempt,
                first=0.5,
                most=8.0,
                on_retry=on_retry,
                retry_if=lambda exc: isinstance(exc, Unavailable),
            )
            for kind, _ in chunk:
                self._counts.add(kind, "published")
        finally:
            self._slots.release()


async def run_backfill(
    backfill_id: str,
    *,
    engine: AsyncEngine,
    client: CleverClient,
    ingestor: Ingestor,
    settings: Settings,
    runner: str,
    lease_owner: str | None = None,
    stale_after: float = backfills.STALE_AFTER_SECONDS,
    chunk_events: int = CHUNK_EVENTS,
    settle_seconds: float = SETTLE_SECONDS,
) -> BackfillResult:
    """Runs backfill `backfill_id` to its end (see the module); returns how it ended.

    `runner` names this run's runner (a poller's id, or the CLI's). `lease_owner`: the holder of
    the district's lease (`sync_districts.lease_owner`) this run writes the district's state
    and cursor under; None writes them unfenced (nothing else holds the district). Raises
    `BackfillNotRunnable` if the row is not this runner's to run, `BackfillTakenOver` or
    `LeaseLost` if the run stopped part-way (the row stays `running`, to be resumed), and lets
    cancellation through the same way. `chunk_events`: events per ingest call (at most the
    Ingestor's batch size). `settle_seconds`: the longest wait, before archiving, for events
    received before the run to be applied.
    """
    async with UnitOfWork(engine) as uow:
        row = await backfills.claim(uow.connection, backfill_id, runner, stale_after)
        if row is None:
            raise BackfillNotRunnable(f"backfill {backfill_id} is not running, or is not ours")
        if not await _district_state(uow, row["district_id"], lease_owner, "backfilling"):
            raise LeaseLost(f"district {row['district_id']} is no longer leased to {lease_owner}")
        await uow.commit()
    district_id: str = row["district_id"]
    log.info(
        "backfill started" if row["start_event_id"] is None else "backfill resumed",
        extra={"backfill_id": backfill_id, "district_id": district_id, "runner": runner},
    )
    counts = _Counts()
    try:
        work = _publish_all(
            row, engine, client, ingestor, settings, runner, counts, chunk_events, settle_seconds
        )
        outcome = await _run(row, engine, runner, counts, work)
    except (BackfillTakenOver, LeaseLost, asyncio.CancelledError):
        raise
    except (CleverError, Unavailable, BodyRejected, OSError, TimeoutError) as exc:
        return await _failed(row, engine, runner, lease_owner, counts, exc)
    except Exception as exc:  # a bug: the row must not stay running forever
        log.exception("backfill failed", extra={"backfill_id": backfill_id})
        return await _failed(row, engine, runner, lease_owner, counts, exc)

    status, start_event_id, missing, archived, error = outcome
    async with UnitOfWork(engine) as uow:
        conn = uow.connection
        if not await backfills.finish(
            conn,
            backfill_id,
            runner,
            status,
            counts=counts.snapshot(),
            missing=missing,
            archived=archived,
            error=error,
        ):
            raise BackfillTakenOver(f"backfill {backfill_id} was taken over")
        if not await _cursor(uow, district_id, lease_owner, start_event_id, row["started_at"]):
            raise LeaseLost(f"district {district_id} is no longer leased to {lease_owner}")
        await uow.commit()
        final = await backfills.get(conn, backfill_id)
    assert final is not None
    log.info(
        "backfill ended",
        extra={"backfill_id": backfill_id, "district_id": district_id, "status": status},
    )
    BACKFILLS.labels(status).inc()
    return BackfillResult(status, backfills.as_json(final))


async def _run(
    row: RowMapping,
    engine: AsyncEngine,
    runner: str,
    counts: _Counts,
    publish_all: Coroutine[Any, Any, _Outcome],
) -> _Outcome:
    """Runs `publish_all` (the run's work) beside the heartbeat; whichever ends first ends both."""
    backfill_id: str = row["id"]
    district_id: str = row["district_id"]
    heartbeat = asyncio.create_task(_heartbeat(engine, backfill_id, runner, counts))
    work = asyncio.create_task(publish_all)
    try:
        done, _ = await asyncio.wait({work, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        heartbeat.result()  # raises what stopped it: taken over, or the database failed
        raise BackfillTakenOver(f"backfill {backfill_id} was taken over")
    finally:
        # Cancelled, failed or done: neither task outlives the run.
        for task in (work, heartbeat):
            task.cancel()
        await asyncio.gather(work, heartbeat, return_exceptions=True)
        log.debug("backfill work over", extra={"district_id": district_id})


async def _heartbeat(engine: AsyncEngine, backfill_id: str, runner: str, counts: _Counts) -> None:
    """Every PROGRESS_SECONDS: the counts and the heartbeat, fenced on the runner."""
    while True:
        await asyncio.sleep(PROGRESS_SECONDS)
        async with UnitOfWork(engine) as uow:
            if not await backfills.touch(uow.connection, backfill_id, runner, counts.snapshot()):
                raise BackfillTakenOver(f"backfill {backfill_id} was taken over")
            await uow.commit()


async def _publish_all(
    row: RowMapping,
    engine: AsyncEngine,
    client: CleverClient,
    ingestor: Ingestor,
    settings: Settings,
    runner: str,
    counts: _Counts,
    chunk_events: int,
    settle_seconds: float,
) -> _Outcome:
    backfill_id: str = row["id"]
    district_id: str = row["district_id"]
    started_at: datetime = row["started_at"]

    # 1. The newest event id, before any list; a resumed run keeps the one it stored.
    start_event_id: str | None = row["start_event_id"]
    if row["start_read_at"] is None:
        newest = await client.newest_event_id(district_id)
        async with UnitOfWork(engine) as uow:
            if not await backfills.set_start_event(uow.connection, backfill_id, runner, newest):
                raise BackfillTakenOver(f"backfill {backfill_id} was taken over")
            stored = await backfills.get(uow.connection, backfill_id)
            await uow.commit()
        assert stored is not None
        start_event_id = stored["start_event_id"]

    # 2. Every list, published as it is read. A run an operator asked for re-announces every
    # record downstream; an automatic one (first contact, a refused cursor) only what changed.
    announce = row["reason"] in backfills.REQUESTED
    seen: dict[str, set[str]] = {kind: set() for kind in KINDS}
    listed_at: dict[str, datetime] = {}  # when each kind's first list began to be read
    async with _Publisher(
        ingestor, backfill_id, district_id, counts, chunk_events, announce
    ) as publisher:
        for kind, path, params in LISTS:
            listed_at.setdefault(kind, datetime.now(UTC))
            async for page in client.pages(district_id, path, params):
                created = _now_iso()
                for record in page.records:
                    record_id = record.get("id")
                    if isinstance(record_id, str) and record_id in seen[kind]:
                        continue  # a user under a second role: published once
                    counts.add(kind, "read")
                    if isinstance(record_id, str):
                        # Returned by this run: never archived, even if it cannot be published.
                        seen[kind].add(record_id)
                    parsed = publisher.parse(
                        kind, synthetic_event(backfill_id, kind, "updated", record, created)
                    )
                    if parsed is not None:
                        await publisher.add(kind, parsed)
        await publisher.flush()

    # 3. The archive step, under the mass-archive guard, once what came before is applied.
    missing: dict[str, int] = {}
    archived: dict[str, int] = {}
    to_archive: dict[str, list[str]] = {}
    if row["archive_missing"]:
        # Not the run's own events: they only update records the lists returned, which are never
        # missing, and waiting for them would stall a run whose consumers are down for good.
        try:
            await _settled(engine, backfill_id, district_id, started_at, settle_seconds)
        except NotSettled as exc:
            # Withheld, not failed: a failed run leaves no cursor, so the next one would publish
            # the whole district again onto the backlog that made this one wait.
            log.warning(
                "backfill archives nothing: earlier events are not applied",
                extra={"backfill_id": backfill_id, "district_id": district_id, "error": str(exc)},
            )
            return _Outcome("guarded", start_event_id, missing, archived, str(exc))
    async with UnitOfWork(engine) as uow:
        for kind in ARCHIVED_KINDS:
            before = await backfills.live_ids(uow.connection, kind, district_id, started_at)
            gone = sorted(before - seen[kind])
            missing[kind] = len(gone)
            if gone:
                to_archive[kind] = gone
        live = {
            kind: await backfills.live_count(uow.connection, kind, district_id)
            for kind in to_archive
        }
    if not row["archive_missing"]:
        return _Outcome("succeeded", start_event_id, missing, archived)
    share = settings.backfill_max_archive_share
    over = [kind for kind, ids in to_archive.items() if len(ids) > share * live[kind]]
    if over and not row["force"]:
        log.warning(
            "backfill archives nothing: over the mass-archive share",
            extra={
                "backfill_id": backfill_id,
                "district_id": district_id,
                "kinds": over,
                "share": share,
                "missing": {k: missing[k] for k in over},
                "live": {k: live[k] for k in over},
            },
        )
        return _Outcome("guarded", start_event_id, missing, archived)
    async with _Publisher(
        ingestor, backfill_id, district_id, counts, chunk_events, announce
    ) as publisher:
        for kind, ids in to_archive.items():
            archived[kind] = 0
            for start in range(0, len(ids), CHUNK_EVENTS):  # reads of stored objects
                async with UnitOfWork(engine) as uow:
                    objects = await backfills.stored_objects(
                        uow.connection, kind, ids[start : start + CHUNK_EVENTS]
                    )
                for obj, stored_created in objects:
                    created = _iso(_after(listed_at[kind], stored_created))
                    parsed = publisher.parse(
                        kind, synthetic_event(backfill_id, kind, "deleted", obj, created)
                    )
                    if parsed is not None:
                        archived[kind] += 1
                        await publisher.add(kind, parsed)
        await publisher.flush()
    return _Outcome("succeeded", start_event_id, missing, archived)


async def _district_state(
    uow: UnitOfWork, district_id: str, lease_owner: str | None, state: str
) -> bool:
    if lease_owner is None:
        await sync.ensure_district(uow.connection, district_id, state)
        return True
    return await sync.set_state(uow.connection, lease_owner, district_id, state)


async def _cursor(
    uow: UnitOfWork,
    district_id: str,
    lease_owner: str | None,
    event_id: str | None,
    started_at: datetime,
) -> bool:
    """The district's cursor at the start event, its state `polling`. The start event's own time
    is not read; the run's start stands in for it (the event is no younger, so the cursor's age
    is under-stated by at most the quiet time before the run: a cursor Clever expired meanwhile
    is refused and backfilled again)."""
    return await sync.backfilled(uow.connection, lease_owner, district_id, event_id, started_at)


async def _failed(
    row: RowMapping,
    engine: AsyncEngine,
    runner: str,
    lease_owner: str | None,
    counts: _Counts,
    exc: BaseException,
) -> BackfillResult:
    error = str(exc) or type(exc).__name__
    district_id: str = row["district_id"]
    log.warning(
        "backfill failed",
        extra={"backfill_id": row["id"], "district_id": district_id, "error": error},
    )
    async with UnitOfWork(engine) as uow:
        conn = uow.connection
        if not await backfills.finish(
            conn, row["id"], runner, "failed", counts=counts.snapshot(), error=error
        ):
            raise BackfillTakenOver(f"backfill {row['id']} was taken over") from exc
        if lease_owner is not None:
            state = "token_invalid" if isinstance(exc, TokenRejected) else "backfilling"
            await sync.set_state(conn, lease_owner, district_id, state, error)
        await uow.commit()
        final = await backfills.get(conn, row["id"])
    assert final is not None
    BACKFILLS.labels("failed").inc()
    return BackfillResult("failed", backfills.as_json(final))
