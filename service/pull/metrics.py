"""The poller's Prometheus series (served on its own /metrics, `ROSTER_POLLER_METRICS_PORT`).

Per district (label `district`): events pulled, cursor age (seconds since the district's feed was
last read to its end), the last successful poll, rate-limit waits and errors by kind. Per poller:
the districts by sync state (this poller's view of all of them) and the leases it holds. A
district's per-district gauges are removed when this poller gives up its lease, so two pollers
never both report one district's cursor age.
"""

from __future__ import annotations

import time
from contextlib import suppress

from prometheus_client import Counter, Gauge

EVENTS_PULLED = Counter(
    "roster_poller_events_pulled_total",
    "Events read from a district's Events API feed and acknowledged by Kafka",
    ["district"],
)
CURSOR_AGE = Gauge(
    "roster_poller_cursor_age_seconds",
    "Seconds since the district's feed was last read to its end (districts this poller holds)",
    ["district"],
)
LAST_SUCCESS = Gauge(
    "roster_poller_last_success_timestamp_seconds",
    "Unix time of the district's last successful poll (a page stored, or the feed drained)",
    ["district"],
)
RATE_LIMIT_WAITS = Counter(
    "roster_poller_rate_limit_waits_total",
    "429 answers from Clever that made the poller wait for the reset",
    ["district"],
)
ERRORS = Counter(
    "roster_poller_errors_total",
    "Failures by kind: rate_limited, server_error, timeout, connection, token_invalid, "
    "cursor_refused, invalid_event, unexpected_answer, kafka_unavailable, database_unavailable",
    ["district", "kind"],
)
DISTRICTS = Gauge(
    "roster_poller_districts",
    "Districts by sync state, as this poller last read them",
    ["state"],
)
LEASES_HELD = Gauge("roster_poller_leases_held", "District leases this poller holds")
BACKFILLS = Counter("roster_backfills", "Backfills this process ended, by status", ["status"])
# Every status from zero: `increase()` cannot count a series' first appearance.
for _status in ("succeeded", "guarded", "failed"):
    BACKFILLS.labels(_status)


class PollerObserver:
    """The Clever client's hooks (service.clever.ClientObserver) as the poller's series."""

    def rate_limited(self, district_id: str, wait: float) -> None:
        RATE_LIMIT_WAITS.labels(district_id).inc()

    def error(self, district_id: str, kind: str) -> None:
        ERRORS.labels(district_id, kind).inc()


def drained(district_id: str, at_unix: float) -> None:
    """The district's feed was read to its end at `at_unix`: its cursor age counts from then."""
    CURSOR_AGE.labels(district_id).set_function(lambda: max(0.0, time.time() - at_unix))
    succeeded(district_id)


def succeeded(district_id: str) -> None:
    LAST_SUCCESS.labels(district_id).set(time.time())


def forget(district_id: str) -> None:
    """This poller no longer holds the district: its gauges go (another poller reports them)."""
    for gauge in (CURSOR_AGE, LAST_SUCCESS):
        with suppress(KeyError):
            gauge.remove(district_id)
