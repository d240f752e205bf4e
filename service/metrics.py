"""Prometheus series of the API process, and the ASGI middleware that counts requests."""

from __future__ import annotations

import os
import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch

HTTP_REQUESTS = Counter(
    "roster_http_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "roster_http_request_duration_seconds",
    "HTTP request duration by route template",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# `roster_alerts_open` is read from the database at each scrape (service/health.py).
OPEN_ALERT_LABELS = ["district_id", "status"]


def process_registry() -> CollectorRegistry:
    """What /metrics reports of this process's series. With several API worker processes
    (`PROMETHEUS_MULTIPROC_DIR` set by `roster api` before it starts them), every worker writes
    its counters and histograms to files there and any worker's /metrics adds them all up."""
    if not os.environ.get(MULTIPROC_DIR):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class RequestMetrics:
    """Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # Route templates, not raw paths, keep the label set bounded.
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            HTTP_LATENCY.labels(template).observe(time.perf_counter() - started)


EVENTS = Counter(
    "roster_webhook_events_total",
    "Events received at the webhook door by outcome",
    ["outcome"],  # accepted | duplicate | rejected
)
PUBLISH_LATENCY = Histogram(
    "roster_publish_latency_seconds",
    "From the first send of a body to Kafka's last acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REJECTIONS = Counter(
    "roster_webhook_rejections_total",
    "Webhook bodies refused, by reason",
    ["reason"],
)
