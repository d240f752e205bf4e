"""`/healthz` (the process serves), `/readyz` (Kafka and the database answer, and the database
schema is at the code's migration head) and `/metrics`.

What `/readyz` and `/metrics` read from the database is reused for a few seconds (`Recent`), so
probes and scrapers, however many, cost the database at most one read per interval. A failed
readiness check is not reused: recovery shows on the next request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.migrate import applied_revisions, code_revisions, schema_problem
from service.deps import EngineDep, KafkaDep
from service.kafka.gateway import KafkaGateway
from service.metrics import OPEN_ALERT_LABELS, process_registry
from service.recent import Recent

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

PROBE_TIMEOUT_S = 2.0
READY_REUSE_S = 2.0  # how long a healthy /readyz answer is reused
ALERTS_REUSE_S = 5.0  # how long /metrics reuses the open-alert counts

T = TypeVar("T")


def _per_app(app: FastAPI, name: str, make: Callable[[], T]) -> T:
    """One `make()` per app, kept in its state (built on first use)."""
    found: T | None = getattr(app.state, name, None)
    if found is None:
        found = make()
        setattr(app.state, name, found)
    return found


async def database_problems(
    engine: AsyncEngine, timeout: float = PROBE_TIMEOUT_S
) -> dict[str, str]:
    """`{"database": why}` when it does not answer, `{"schema": why}` when its schema is not at
    the code's migration head, `{}` when both are fine."""

    try:
        versions = await asyncio.wait_for(applied_revisions(engine), timeout)
    except Exception as exc:
        return {"database": f"query failed: {type(exc).__name__}"}
    problem = schema_problem(versions, *code_revisions())
    return {"schema": problem} if problem else {}


async def _problems(gateway: KafkaGateway, engine: AsyncEngine) -> dict[str, str]:
    kafka, database = await asyncio.gather(gateway.probe(), database_problems(engine))
    return {**database, **({"kafka": kafka} if kafka else {})}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, gateway: KafkaDep, engine: EngineDep) -> JSONResponse:
    recent: Recent[dict[str, str]] = _per_app(
        request.app,
        "readiness",
        lambda: Recent(lambda: _problems(gateway, engine), READY_REUSE_S, reuse=lambda p: not p),
    )
    problems = await recent.get()
    checks = {"kafka": "ok", "database": "ok", "schema": "ok"} | problems
    if "database" in problems:
        checks["schema"] = "not checked: the database does not answer"
    if problems:
        return JSONResponse(
            {"status": "unavailable", "down": sorted(problems), "checks": checks}, status_code=503
        )
    return JSONResponse({"status": "ok", "checks": checks})


class OpenAlerts:
    """`roster_alerts_open`, read from the database (the consumers write the alerts). Built per
    scrape rather than kept in a Gauge, so a district whose alerts all resolved drops out, and
    API worker processes never disagree. A failed read (database down) reports the last values
    rather than nothing."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._recent = Recent(self._read, ALERTS_REUSE_S)
        self._last: list[tuple[str, str, int]] = []

    async def _read(self) -> list[tuple[str, str, int]]:
        async with asyncio.timeout(PROBE_TIMEOUT_S), self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT district_id, status, count(*) FROM alerts "
                        "WHERE status <> 'resolved' GROUP BY district_id, status"
                    )
                )
            ).all()
        return [(str(d), str(s), int(n)) for d, s, n in rows]

    async def family(self) -> GaugeMetricFamily:
        try:
            self._last = await self._recent.get()
        except Exception:
            log.warning("open alerts not read for /metrics; reporting the last values")
        family = GaugeMetricFamily(
            "roster_alerts_open",
            "Unresolved alerts per district and status",
            labels=OPEN_ALERT_LABELS,
        )
        for district_id, status, count in self._last:
            family.add_metric([district_id, status], count)
        return family


class _Families:
    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


@router.get("/metrics")
async def metrics(request: Request, engine: EngineDep) -> Response:
    open_alerts: OpenAlerts = _per_app(request.app, "open_alerts", lambda: OpenAlerts(engine))
    alerts = await open_alerts.family()
    body = generate_latest(process_registry()) + generate_latest(_Families(alerts))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
