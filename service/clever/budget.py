"""The client's own request budget per token, so that it alone stays under Clever's limit.

A sliding window (the token bucket that never lends ahead): at most `per_window` requests start in
any `window` seconds, which also keeps every fixed one-minute window of Clever's under the limit.
A 429 blocks the whole token until the reset Clever gave, for every caller sharing it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping


class RequestBudget:
    def __init__(
        self,
        per_window: int,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_window < 1 or window <= 0:
            raise ValueError("a budget needs at least one request in a positive window")
        self.per_window = per_window
        self.window = window
        self._clock = clock
        self._starts: deque[float] = deque()
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()  # waiters take their turn in order

    def delay(self) -> float:
        """Seconds until one more request may start (0: now). Forgets starts out of the window."""
        now = self._clock()
        while self._starts and self._starts[0] <= now - self.window:
            self._starts.popleft()
        wait = max(0.0, self._blocked_until - now)
        if len(self._starts) >= self.per_window:
            wait = max(wait, self._starts[0] + self.window - now)
        return wait

    async def take(self) -> None:
        """Waits until a request may start, and counts it."""
        async with self._lock:
            wait = self.delay()
            while wait > 0:  # a 429 met meanwhile may lengthen the wait
                await asyncio.sleep(wait)
                wait = self.delay()
            self._starts.append(self._clock())

    def block_for(self, seconds: float) -> None:
        """No request starts for `seconds` (a 429's reset); a longer block already set stays."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)


RESET_CAP_SECONDS = 65.0
WINDOW_WITHOUT_RESET = 60.0


def reset_wait(headers: Mapping[str, str], now: float | None = None) -> float:
    """Seconds to wait after a 429: until `X-RateLimit-Reset` (Unix seconds), at most 65 s; a whole
    60 s window when the header is missing or unreadable. `headers` is case-insensitive (httpx's)
    or has lower-case keys."""
    raw = headers.get("x-ratelimit-reset")
    try:
        reset = float(raw) if raw is not None else None
    except ValueError:
        reset = None
    if reset is None:
        return WINDOW_WITHOUT_RESET
    current = time.time() if now is None else now
    return min(RESET_CAP_SECONDS, max(0.0, reset - current))
