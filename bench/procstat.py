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


def cpu_ticks() -> tuple[int, int]:
    """The machine's CPU ticks so far (all states, across cores) and those stolen: time the
    hypervisor ran other guests while this one had work (the 8th field of /proc/stat's cpu line)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7]


def steal_share(before: tuple[int, int]) -> float:
    """Stolen share of the machine's CPU time since `before` (from `cpu_ticks`): a run whose share
    is high was slowed by the other tenants, whatever the code did."""
    total, stolen = cpu_ticks()
    return (stolen - before[1]) / max(1, total - before[0])
