"""CPU time of benchmarked processes, read from /proc (Linux)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far: the API's cost per event
    is steadier than its rate on a machine whose other tenants come and go."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def loop_seconds() -> float:
    """Seconds for a fixed pure-Python loop: how fast this shared machine is right now (on an
    idle one about 0.5 s; runs made while it reads much higher are slowed by other tenants)."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started
