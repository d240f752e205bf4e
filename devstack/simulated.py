"""`roster dev --simulate`: the local stack fed by a simulated Clever instead of a real one.

A `roster simulate` child serves seeded districts; the poller discovers them through the
simulator's OAuth token list, backfills each, then polls its Events API every second. Every
district holds a single-school program, so the students the simulator puts in two schools open
alerts; a trickle of changes (new students, moves, roster changes, deletes) keeps the feed busy.
The supervisor prints one line per district whenever what it shows changes.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# What the simulated districts look like: small enough to flow in within seconds, large enough to
# have students in two schools.
SIMULATE_ARGS = ("--seed", "1", "--districts", "2", "--schools", "6", "--students", "600")
SIMULATED_PROGRAM = "mypath_math"  # single_school in the default catalog
CHANGE_EVERY_SECONDS = 3.0
REPORT_EVERY_SECONDS = 2.0


def http_json(
    url: str, *, token: str | None = None, body: dict[str, Any] | None = None, timeout: float = 5
) -> Any:
    """One JSON request to a loopback service (the simulator's /sim/ or the local API)."""
    request = urllib.request.Request(  # noqa: S310 (loopback URLs of our own children)
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def simulator_settings(sim_base: str) -> dict[str, str]:
    """The ROSTER_CLEVER_* environment pointing the poller at the simulator."""
    info = http_json(f"{sim_base}/sim/")
    return {
        "ROSTER_CLEVER_API_URL": sim_base,
        "ROSTER_CLEVER_OAUTH_URL": sim_base,
        "ROSTER_CLEVER_CLIENT_ID": info["client_id"],
        "ROSTER_CLEVER_CLIENT_SECRET": info["client_secret"],
    }


@dataclass
class SimulatedFeed:
    """Drives the simulator and reports what reached the roster, from the supervisor's loop."""

    sim_base: str
    api_base: str
    admin_token: str
    say: Any
    _districts: list[str] = field(default_factory=list)
    _assigned: set[str] = field(default_factory=set)
    _shown: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    _next_change: float = 0.0
    _next_report: float = 0.0

    def start(self) -> None:
        info = http_json(f"{self.sim_base}/sim/")
        self._districts = [d["id"] for d in info["districts"]]
        names = ", ".join(f"{d['name']} ({d['id']})" for d in info["districts"])
        count = len(self._districts)
        self.say(f"simulated Clever at {self.sim_base} with {count} districts: {names}")
        self._next_change = time.monotonic() + 10  # let the first backfill start first

    def tick(self) -> None:
        """Called every loop of the supervisor; each step is best effort (a child may be busy)."""
        now = time.monotonic()
        try:
            self._assign()
            if now >= self._next_change:
                self._next_change = now + CHANGE_EVERY_SECONDS
                for district_id in self._districts:
                    http_json(
                        f"{self.sim_base}/sim/changes",
                        body={
                            "change": "a_day_of_changes",
                            "district_id": district_id,
                            "args": {"n": 1},
                        },
                    )
            if now >= self._next_report:
                self._next_report = now + REPORT_EVERY_SECONDS
                self._report()
        except OSError:
            return  # the next tick tries again

    def _assign(self) -> None:
        """One district-wide single-school program per simulated district (once)."""
        for district_id in self._districts:
            if district_id in self._assigned:
                continue
            http_json(
                f"{self.api_base}/v1/program-assignments",
                token=self.admin_token,
                body={"program": SIMULATED_PROGRAM, "scope": "district", "scope_id": district_id},
            )
            self._assigned.add(district_id)
            self.say(f"assigned {SIMULATED_PROGRAM} to district {district_id}")

    def _report(self) -> None:
        now = time.monotonic()
        districts = http_json(f"{self.api_base}/v1/districts", token=self.admin_token)["items"]
        alerts = http_json(f"{self.api_base}/v1/alerts?status=open", token=self.admin_token)
        opened = Counter(alert["district_id"] for alert in alerts["items"])
        for district in districts:
            name = district.get("name") or district["id"]
            state = f"{district['sync_state']}, open single-school alerts {opened[district['id']]}"
            cursor = district.get("cursor_event_id") or "-"
            shown = self._shown.get(district["id"])
            # A line when the state or the alerts change; the moving cursor at most every 15 s.
            if shown is None or shown[0] != state or (shown[1] != cursor and now >= shown[2]):
                self._shown[district["id"]] = (state, cursor, now + 15)
                self.say(f"district {name}: {state}, cursor {cursor}")
