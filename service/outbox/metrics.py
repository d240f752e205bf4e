"""Prometheus series of a relay process (served on its own port, like the consumer's)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RELAYED = Counter("roster_outbox_relayed_total", "Outbox messages published", ["topic"])
RELAY_LATENCY = Histogram(
    "roster_outbox_relay_latency_seconds",
    "From the writing transaction to the broker's acknowledgement",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 60),
)
BACKLOG = Gauge("roster_outbox_backlog", "Outbox messages waiting to be published (not parked)")
# The alert signal: a backlog that is large but moving is fine, one whose oldest row ages is not
# (relays down, or the broker refusing every round). Sampled with the backlog, every few seconds.
BACKLOG_AGE = Gauge(
    "roster_outbox_backlog_age_seconds",
    "Age of the oldest outbox message waiting to be published (parked ones apart); 0 when none",
)
PARKED = Gauge(
    "roster_outbox_parked", "Outbox messages the broker refused for good, set aside until re-queued"
)
PARKED_TOTAL = Counter(
    "roster_outbox_rows_parked_total", "Outbox messages this relay parked", ["topic", "error"]
)
PRUNED = Counter("roster_outbox_pruned_total", "Sent outbox rows deleted after retention")
