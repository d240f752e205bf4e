"""`/healthz` (the process serves), `/readyz` (Kafka and the database answer) and `/metrics`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.kafka.gateway import KafkaGateway
from service.metrics import OPEN_ALERT_LABELS, process_registry

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

PROBE_TIMEOUT_S = 2.0


async def database_problem(engine: AsyncEngine, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    async def probe() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(probe(), timeout)
    except Exception as exc:
        return f"query failed: {type(exc).__name__}"
    return None


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    gateway: KafkaGateway = request.app.state.kafka
    engine: AsyncEngine = request.app.state.engine
    kafka, database = await asyncio.gather(gateway.probe(), database_problem(engine))
    checks = {"kafka": kafka or "ok", "database": database or "ok"}
    down = sorted(name for name, problem in (("kafka", kafka), ("database", database)) if problem)
    if down:
        return JSONResponse(
            {"status": "unavailable", "down": down, "checks": checks}, status_code=503
        )
    return JSONResponse({"status": "ok", "checks": checks})


# The last successful read: a failed read (database down) reports these rather than nothing.
_open_alerts: list[tuple[str, str, int]] = []


async def _open_alerts_family(engine: AsyncEngine) -> GaugeMetricFamily:
    """`roster_alerts_open`, read from the database at each scrape (the consumers write the
    alerts). Built per scrape rather than kept in a Gauge, so a district whose alerts all
    resolved drops out, and API worker processes never disagree."""
    global _open_alerts
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S), engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT district_id, status, count(*) FROM alerts "
                        "WHERE status <> 'resolved' GROUP BY district_id, status"
                    )
                )
            ).all()
        _open_alerts = [(str(d), str(s), int(n)) for d, s, n in rows]
    except Exception:
        log.warning("open alerts not read for /metrics; reporting the last values")
    family = GaugeMetricFamily(
        "roster_alerts_open", "Unresolved alerts per district and status", labels=OPEN_ALERT_LABELS
    )
    for district_id, status, count in _open_alerts:
        family.add_metric([district_id, status], count)
    return family


class _Families:
    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    alerts = await _open_alerts_family(request.app.state.engine)
    body = generate_latest(process_registry()) + generate_latest(_Families(alerts))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
