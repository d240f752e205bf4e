"""`/healthz` (the process serves), `/readyz` (Kafka and the database answer) and `/metrics`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.kafka.gateway import KafkaGateway
from service.metrics import OPEN_ALERTS

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


async def _refresh_open_alerts(engine: AsyncEngine) -> None:
    """Sets the open-alerts gauge from the database; a failed read leaves the last values."""
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
    except Exception:
        return
    OPEN_ALERTS.clear()  # a district whose alerts all resolved drops out
    for district_id, status, count in rows:
        OPEN_ALERTS.labels(district_id, status).set(count)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    await _refresh_open_alerts(request.app.state.engine)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
