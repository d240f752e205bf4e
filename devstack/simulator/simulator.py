"""`CleverSimulator`: the in-memory state of a simulated Clever that tests import and drive
directly (changes, faults, truth, the request log); app.py serves it over HTTP."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from devstack.simulator.changes import Change, Changes
from devstack.simulator.district import Clock, Emitter, EventIds, SimDistrict
from devstack.simulator.faults import Fault, Faults, RateLimiter
from devstack.simulator.seed import Size, default_epoch, seed_district
from devstack.simulator.truth import StudentTruth, student_truth

RETENTION = timedelta(days=30)


@dataclass(frozen=True)
class LoggedRequest:
    """One request to the simulated API or token list (not /sim/): `process` is its
    X-Roster-Process header; `started`/`ended` are Unix times."""

    district_id: str | None
    path: str
    query: str
    process: str | None
    status: int
    started: float
    ended: float

    def as_json(self) -> dict[str, Any]:
        return {
            "district_id": self.district_id,
            "path": self.path,
            "query": self.query,
            "process": self.process,
            "status": self.status,
            "started": self.started,
            "ended": self.ended,
        }


class CleverSimulator:
    """A simulated Clever: `districts` seeded districts of `size` (deterministic from `seed`;
    a random seed when None, so that tests sharing a database never reuse ids)."""

    def __init__(
        self,
        *,
        seed: int | None = None,
        districts: int = 1,
        size: Size | None = None,
        client_id: str = "sim-client",
        client_secret: str | None = None,
        rate_limit: int = 1200,
        rate_window: float = 60.0,
        retention: timedelta = RETENTION,
        next_on_last_page: bool = False,
        ending_before_last: bool = True,
        epoch: datetime | None = None,
    ) -> None:
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(6))
        self._rng = random.Random(f"{self.seed}")
        self.size = size or Size()
        self.client_id = client_id
        self.client_secret = client_secret or f"sim-secret-{self._rng.getrandbits(64):016x}"
        self.clock = Clock()
        self.epoch = epoch or default_epoch(self.clock.now())
        self.emitter = Emitter(self.clock, EventIds(self._rng))
        self.faults = Faults()
        self.rate_limiter = RateLimiter(rate_limit, rate_window)
        self.retention = retention
        # Clever's last page has no next link; some servers end with an empty page instead.
        self.next_on_last_page = next_on_last_page
        # `ending_before=last` is documented for earlier API versions only: a server may refuse it.
        self.ending_before_last = ending_before_last
        self.requests: list[LoggedRequest] = []
        self._districts: dict[str, SimDistrict] = {}
        self._by_token: dict[str, str] = {}
        for _ in range(districts):
            self.add_district()

    def __repr__(self) -> str:
        # A failing test's traceback shows its simulator this way: the seed reproduces its data.
        districts = len(self._districts)
        return f"CleverSimulator(seed={self.seed}, size={self.size}, districts={districts})"

    # --- districts and tokens ------------------------------------------------------------
    @property
    def district_ids(self) -> list[str]:
        return list(self._districts)

    def district(self, district_id: str) -> SimDistrict:
        try:
            return self._districts[district_id]
        except KeyError:
            raise LookupError(f"no simulated district {district_id}") from None

    def add_district(self, size: Size | None = None, name: str | None = None) -> str:
        """A new seeded district (the n-th draws from seed/n); its id."""
        number = len(self._districts)
        rng = random.Random(f"{self.seed}/{number}")
        district = SimDistrict(
            id=f"{rng.getrandbits(96):024x}",
            name=name or f"Sim District {number}",
            token=f"sim-token-{rng.getrandbits(128):032x}",
            rng=random.Random(f"{self.seed}/{number}/changes"),
        )
        seed_district(district, rng, size or self.size, self.epoch)
        self._districts[district.id] = district
        assert district.token is not None
        self._by_token[district.token] = district.id
        return district.id

    def token(self, district_id: str) -> str | None:
        """The district's current token (None once revoked)."""
        return self.district(district_id).token

    def district_of(self, token: str) -> SimDistrict | None:
        district_id = self._by_token.get(token)
        return None if district_id is None else self._districts[district_id]

    def revoke_token(self, district_id: str) -> None:
        """The token answers 401 and leaves the OAuth token list (no new one)."""
        district = self.district(district_id)
        if district.token is not None:
            self._by_token.pop(district.token, None)
        district.token = None

    def rotate_token(self, district_id: str) -> str:
        """A new token in the OAuth list; the old one answers 401. Also restores a revoked one."""
        self.revoke_token(district_id)
        district = self.district(district_id)
        district.token = f"sim-token-{district.rng.getrandbits(128):032x}"
        self._by_token[district.token] = district_id
        return district.token

    def token_list(self, district_id: str | None = None) -> list[dict[str, Any]]:
        """The OAuth token list's entries (of one district when given)."""
        entries = []
        for district in self._districts.values():
            if district.token is None or district_id not in (None, district.id):
                continue
            entries.append(
                {
                    "id": hashlib.sha256(district.token.encode()).hexdigest()[:24],
                    "created": self.epoch.isoformat().replace("+00:00", "Z"),
                    "owner": {"type": "district", "id": district.id},
                    "access_token": district.token,
                    "scopes": ["read:district_admins", "read:students", "read:teachers"],
                }
            )
        return entries

    def settings_values(self, base_url: str) -> dict[str, str]:
        """The ROSTER_CLEVER_* settings (as Settings fields) pointing at this simulator."""
        return {
            "clever_api_url": base_url,
            "clever_oauth_url": base_url,
            "clever_client_id": self.client_id,
            "clever_client_secret": self.client_secret,
        }

    # --- changes (each writes the record AND its event) ---------------------------------
    def changes(self, district_id: str) -> Changes:
        return Changes(self.district(district_id), self.emitter)

    def new_student(self, district_id: str, school_id: str | None = None) -> Change:
        return self.changes(district_id).new_student(school_id)

    def move_student(
        self, district_id: str, student_id: str | None = None, to_school: str | None = None
    ) -> Change:
        return self.changes(district_id).move_student(student_id, to_school)

    def change_section_roster(
        self, district_id: str, section_id: str | None = None, add: int = 1, remove: int = 1
    ) -> Change:
        return self.changes(district_id).change_section_roster(section_id, add, remove)

    def update_student(self, district_id: str, student_id: str | None = None) -> Change:
        return self.changes(district_id).update_student(student_id)

    def delete_student(self, district_id: str, student_id: str | None = None) -> Change:
        return self.changes(district_id).delete_student(student_id)

    def unshare(self, district_id: str, record_id: str | None = None) -> Change:
        return self.changes(district_id).unshare(record_id)

    def reshare(self, district_id: str, record_id: str | None = None) -> Change:
        return self.changes(district_id).reshare(record_id)

    def a_day_of_changes(self, district_id: str, n: int = 100) -> list[Change]:
        return self.changes(district_id).a_day_of_changes(n)

    # --- faults and time -----------------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        return self.faults.add(fault)

    def rate_limit_burst(self, count: int, reset_in: float = 1.0, **where: str) -> Fault:
        """The next `count` API requests get 429, their reset `reset_in` seconds away."""
        return self.faults.add(Fault("rate_limit", count, reset_in, **where))

    def server_errors(self, count: int, **where: str) -> Fault:
        return self.faults.add(Fault("server_error", count, 0.0, **where))

    def slow_pages(self, seconds: float, count: int | None = None, **where: str) -> Fault:
        return self.faults.add(Fault("slow", count, seconds, **where))

    def hang(self, count: int = 1, seconds: float = 600.0, **where: str) -> Fault:
        """The next `count` requests get no answer until the client disconnects (or `seconds`)."""
        return self.faults.add(Fault("hang", count, seconds, **where))

    def clear_faults(self) -> None:
        self.faults.clear()

    def advance_clock(self, delta: timedelta) -> None:
        """Moves the simulator's now (event times, expiry) forward; real time runs on."""
        self.clock.offset += delta

    def expire_events(self, older_than: timedelta | None = None) -> int:
        """Forgets events older than `older_than` (the retention, 30 days, by default) in every
        district; how many. Listing the feed does this by itself at the retention."""
        cutoff = self.clock.now() - (self.retention if older_than is None else older_than)
        return sum(d.feed.expire(cutoff) for d in self._districts.values())

    # --- reads ---------------------------------------------------------------------------
    def truth(self, district_id: str | None = None) -> dict[str, StudentTruth]:
        """Per student id: expected schools, sections and deleted flag (see truth.py)."""
        found: dict[str, StudentTruth] = {}
        for district in self._districts.values():
            if district_id in (None, district.id):
                found.update(student_truth(district))
        return found

    def records(self, district_id: str, kind: str) -> list[dict[str, Any]]:
        """The live records of a kind, in id order (the simulator's own: do not change them)."""
        collection = self.district(district_id).kind(kind)
        return [collection.records[i] for i in collection.ids()]

    def events(self, district_id: str) -> list[dict[str, Any]]:
        """The district's kept events, oldest first (parsed copies)."""
        return [orjson.loads(e.item)["data"] for e in self.district(district_id).feed]

    def newest_event_id(self, district_id: str) -> str | None:
        ids = self.district(district_id).feed.ids
        return ids[-1] if ids else None

    def log_request(
        self,
        district_id: str | None,
        path: str,
        query: str,
        process: str | None,
        status: int,
        started: float,
        ended: float,
    ) -> None:
        self.requests.append(
            LoggedRequest(district_id, path, query, process, status, started, ended)
        )

    def clear_requests(self) -> None:
        self.requests.clear()
