"""Injected faults and the per-token rate limit of the simulated API.

A fault answers (or delays) the next `count` API requests that match it (a district and/or a
path prefix; None matches all), oldest fault first; `count=None` lasts until cleared. Kinds:
- `rate_limit`: 429 with `X-RateLimit-Reset` `seconds` from now;
- `server_error`: 500;
- `slow`: the answer comes `seconds` late;
- `hang`: no answer until the client gives up (disconnects) or `seconds` pass.
The OAuth token list and the /sim/ control API never see faults.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

FaultKind = Literal["rate_limit", "server_error", "slow", "hang"]
KINDS: tuple[FaultKind, ...] = ("rate_limit", "server_error", "slow", "hang")


@dataclass
class Fault:
    kind: FaultKind
    count: int | None = 1
    seconds: float = 1.0
    district_id: str | None = None
    path: str | None = None  # a prefix of the request path, e.g. "/v3.0/events"

    def matches(self, district_id: str | None, path: str) -> bool:
        return (self.district_id is None or self.district_id == district_id) and (
            self.path is None or path.startswith(self.path)
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    def __init__(self) -> None:
        self.pending: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        if fault.kind not in KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}; one of {', '.join(KINDS)}")
        if fault.count is not None and fault.count < 1:
            raise ValueError("a fault's count is at least 1 (or null: until cleared)")
        if fault.seconds < 0:
            raise ValueError("a fault's seconds are not negative")
        self.pending.append(fault)
        return fault

    def clear(self) -> None:
        self.pending.clear()

    def take(self, district_id: str | None, path: str) -> Fault | None:
        """The first fault matching this request, counted as used."""
        for fault in self.pending:
            if fault.matches(district_id, path):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self.pending.remove(fault)
                return fault
        return None


@dataclass
class _Window:
    start: float
    used: int = 0


class RateLimiter:
    """`limit` requests per token in fixed windows of `window` seconds (Clever: 1,200 a minute).
    A refused request does not count."""

    def __init__(self, limit: int = 1200, window: float = 60.0) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a rate limit needs a positive limit and window")
        self.limit = limit
        self.window = window
        self._windows: dict[str, _Window] = {}

    def admit(self, token: str, now: float | None = None) -> tuple[bool, dict[str, str]]:
        """Whether a request may proceed, and the X-RateLimit-* headers of its answer."""
        now = time.time() if now is None else now
        current = self._windows.get(token)
        if current is None or now >= current.start + self.window:
            current = self._windows[token] = _Window(now)
        admitted = current.used < self.limit
        if admitted:
            current.used += 1
        return admitted, self.headers(current.start + self.window, self.limit - current.used)

    def headers(self, reset: float, remaining: int) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }
