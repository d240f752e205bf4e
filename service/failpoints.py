"""Named points where a test can make a process die on the spot (SIGKILL), to prove that a crash
exactly there loses nothing. `ROSTER_FAILPOINTS` lists the armed names (space-separated); unset in
production, where `hit` costs one set lookup."""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(os.environ.get("ROSTER_FAILPOINTS", "").split())


def hit(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
