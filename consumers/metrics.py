"""Prometheus series of a consumer process, served on its own port (one scrape target per
process, as Prometheus expects of separate processes)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

APPLIED = Counter(
    "roster_events_applied_total", "Events settled by the consumer, by outcome", ["outcome"]
)  # applied | stale | dead_lettered | skipped (settled before)
APPLY_LATENCY = Histogram(
    "roster_apply_latency_seconds",
    "From receipt at a door to the roster commit",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BATCH_SIZE = Histogram(
    "roster_consumer_batch_size",
    "Records per applied batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
LAG = Gauge(
    "roster_consumer_lag", "Records behind the partition's high-water mark", ["topic", "partition"]
)
DEAD_LETTERED = Counter("roster_events_dead_lettered_total", "Events sent to the dead-letter topic")
