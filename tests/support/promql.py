"""What the alert rules and the dashboard may name: the Prometheus series the code exports, read
from its metric constructors, and the metric names a PromQL expression reads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from service.paths import project_root

# Series that issue 15's poller and backfill export (named in its plan), taken on trust only
# while their code has not landed: once the folder or file holding them exists, each name must be
# found in the code like every other, so a name the code spells otherwise fails here.
AWAITED: dict[str, dict[str, str]] = {
    "service/pull": {
        "roster_poller_events_pulled_total": "Counter",
        "roster_poller_cursor_age_seconds": "Gauge",
        "roster_poller_last_success_timestamp_seconds": "Gauge",
        "roster_poller_rate_limit_waits_total": "Counter",
        "roster_poller_errors_total": "Counter",
        "roster_poller_districts": "Gauge",
        "roster_poller_leases_held": "Gauge",
    },
    "service/pull/backfill.py": {"roster_backfills_total": "Counter"},
}

# The runtime's code; the dev stack and the tests export nothing an operator scrapes.
_SOURCES = ("service", "consumers")
_CONSTRUCTOR = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|Info|Enum"
    r"|CounterMetricFamily|GaugeMetricFamily|HistogramMetricFamily|SummaryMetricFamily)"
    r"\(\s*(?:name\s*=\s*)?[\"'](\w+)[\"']"
)


def _series(kind: str, name: str) -> set[str]:
    """The series names a metric of `kind` called `name` shows on /metrics."""
    kind = kind.removesuffix("MetricFamily")
    if kind == "Counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "Histogram":
        return {name, *(f"{name}_{s}" for s in ("bucket", "sum", "count", "created"))}
    if kind == "Summary":
        return {name, *(f"{name}_{s}" for s in ("sum", "count", "created"))}
    if kind == "Info":
        return {f"{name}_info"}
    return {name}


def exported_series(root: Path | None = None) -> set[str]:
    """Every series name the code's metric constructors give /metrics, plus the awaited ones
    whose code has not landed yet (see `AWAITED`)."""
    root = root or project_root()
    found: set[str] = set()
    for folder in _SOURCES:
        for path in (root / folder).rglob("*.py"):
            for kind, name in _CONSTRUCTOR.findall(path.read_text()):
                found |= _series(kind, name)
    for where, metrics in AWAITED.items():
        if not (root / where).exists():
            for name, kind in metrics.items():
                found |= _series(kind, name)
    return found


_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` reads: identifiers that are not a function, a keyword, a label
    (inside braces or a grouping), a duration or a Grafana variable."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers (their strings are gone)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _GROUPING.sub("", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables outside brackets
    return {n for n in _IDENTIFIER.findall(text) if n.lower() not in _KEYWORDS}


def promtool_check(*extra_rule_files: Path) -> subprocess.CompletedProcess[str]:
    """Runs scripts/promtool-check (which installs promtool where missing, or fails saying why),
    checking `extra_rule_files` too."""
    return subprocess.run(
        [str(project_root() / "scripts" / "promtool-check"), *map(str, extra_rule_files)],
        capture_output=True,
        text=True,
        timeout=900,  # a first run installs Debian's prometheus package
        check=False,
    )
