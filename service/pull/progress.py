"""`roster backfill`'s progress display (rich): per kind the records read and published, the
publish rate and an ETA; and the exit code of an ended backfill.

The ETA of a kind is what is left of its expected total at its current rate. The expected total
is the district's last finished backfill's read count for the kind when there is one (a district
changes little between syncs), never less than what this run has read so far; without a previous
run it is the read count so far (the ETA then covers what is read and not yet published).
"""

from __future__ import annotations

import time
from collections import deque
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from service.pull.backfill import KINDS
from service.pull.backfills import REQUESTED
from service.pull.command import Progress

# 2 and 3 are the CLI's for a setting (or no token) and an unreachable dependency.
EXIT_CODES = {"succeeded": 0, "guarded": 4, "failed": 1}
RATE_WINDOW_SECONDS = 5.0


def exit_code(status: str) -> int:
    """0 succeeded, 4 guarded (nothing archived), 1 failed (or anything else)."""
    return EXIT_CODES.get(status, 1)


class Rates:
    """Publish rates per kind over the last RATE_WINDOW_SECONDS, and ETAs (pure: times given)."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self._window = window
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def add(self, at: float, published: dict[str, int]) -> None:
        self._samples.append((at, dict(published)))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self._window:
            self._samples.popleft()

    def rate(self, kind: str | None = None) -> float | None:
        """Records a second (all kinds when `kind` is None); None until two samples apart."""
        if len(self._samples) < 2:
            return None
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        kinds = KINDS if kind is None else (kind,)
        done = sum(last.get(k, 0) - first.get(k, 0) for k in kinds)
        return max(done, 0) / (t1 - t0)

    @staticmethod
    def eta(expected: int, published: int, rate: float | None) -> float | None:
        """Seconds left; 0 when done, None when unknown (no rate yet, or stalled)."""
        left = expected - published
        if left <= 0:
            return 0.0
        if not rate:
            return None
        return left / rate


def expected_totals(counts: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, int]:
    """Per kind: the previous run's read count, at least this run's read count so far."""
    before = (previous or {}).get("counts") or {}
    return {
        kind: max(
            int((before.get(kind) or {}).get("read", 0)),
            int((counts.get(kind) or {}).get("read", 0)),
        )
        for kind in KINDS
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes}:{sec:02d}" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class BackfillDisplay:
    """A live table on a terminal; elsewhere (a pipe, a log) one line per status or note change."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._rates = Rates()
        self._live: Live | None = None
        self._last_line = ""
        self._started = time.monotonic()

    def __enter__(self) -> BackfillDisplay:
        if self._console.is_terminal:
            self._live = Live(console=self._console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def update(self, progress: Progress) -> None:
        row = progress.backfill
        counts: dict[str, Any] = row.get("counts") or {}
        published = {k: int((counts.get(k) or {}).get("published", 0)) for k in KINDS}
        self._rates.add(time.monotonic(), published)
        if self._live is not None:
            self._live.update(self.render(progress))
            return
        line = (
            f"backfill {row['id']} of district {row['district_id']}: {row['status']}, "
            f"{progress.note}"
        )
        if line != self._last_line:
            self._console.print(line, highlight=False)
            self._last_line = line

    def render(self, progress: Progress) -> Group:
        row = progress.backfill
        counts: dict[str, Any] = row.get("counts") or {}
        expected = expected_totals(counts, progress.previous)
        table = Table(box=None, pad_edge=False)
        for name, justify in (
            ("kind", "left"),
            ("read", "right"),
            ("published", "right"),
            ("invalid", "right"),
            ("expected", "right"),
            ("rate/s", "right"),
            ("ETA", "right"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        total_published = 0
        for kind in KINDS:
            kind_counts = counts.get(kind) or {}
            done = int(kind_counts.get("published", 0))
            total_published += done
            rate = self._rates.rate(kind)
            table.add_row(
                kind,
                str(kind_counts.get("read", 0)),
                str(done),
                str(kind_counts.get("invalid", 0)),
                str(expected[kind]),
                "-" if rate is None else f"{rate:,.0f}",
                _duration(Rates.eta(expected[kind], done, rate)),
            )
        rate = self._rates.rate()
        table.add_row(
            Text("all", style="bold"),
            str(sum(int((counts.get(k) or {}).get("read", 0)) for k in KINDS)),
            str(total_published),
            "",
            str(sum(expected.values())),
            "-" if rate is None else f"{rate:,.0f}",
            _duration(Rates.eta(sum(expected.values()), total_published, rate)),
        )
        joined = " (already running: following it)" if progress.joined else ""
        head = Text(
            f"backfill {row['id']} of district {row['district_id']}{joined}: "
            f"{row['status']} - {progress.note} - "
            f"{_duration(time.monotonic() - self._started)} elapsed",
        )
        return Group(head, table)

    def summary(self, row: dict[str, Any]) -> str:
        """One line for the end: status, published, missing and archived, the error if any."""
        counts: dict[str, Any] = row.get("counts") or {}
        published = sum(int((c or {}).get("published", 0)) for c in counts.values())
        parts = [f"roster backfill: {row['id']} {row['status']}", f"{published} published"]
        missing = {k: n for k, n in (row.get("missing") or {}).items() if n}
        archived = {k: n for k, n in (row.get("archived") or {}).items() if n}
        if missing:
            parts.append("missing " + ", ".join(f"{k} {n}" for k, n in sorted(missing.items())))
        if archived:
            parts.append("archived " + ", ".join(f"{k} {n}" for k, n in sorted(archived.items())))
        if row["status"] == "guarded" and not row.get("error"):
            parts.append("nothing archived (over the allowed share; --force archives)")
        if row.get("error"):  # a guarded run's error says why it withheld the archive
            parts.append(f"error: {row['error']}")
        if row.get("reason") not in (None, *REQUESTED):
            parts.append(
                f"it was the poller's own ({row['reason']}): records it found as stored were not "
                "re-announced downstream (run roster backfill again to re-announce them)"
            )
        return "; ".join(parts)
