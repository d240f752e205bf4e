"""The API process: FastAPI app factory and the resources its lifespan owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry import TelemetryConfig
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service import health, reach, tracing
from service.db.driver_pool import DriverPool, driver_dsn
from service.db.engine import database_url, make_engine
from service.events import routes as events_routes
from service.gc_tuning import tune_gc
from service.kafka.config import bootstrap_servers, topic_durability
from service.kafka.gateway import KafkaGateway
from service.logs import configure_logging
from service.metrics import RequestMetrics
from service.outbox import routes as outbox_routes
from service.programs import routes as program_routes
from service.pull import districts as district_routes
from service.pull import routes as pull_routes
from service.roster import routes as roster_routes
from service.settings import Settings, load_settings
from service.students import routes as student_routes
from service.webhooks import openapi as webhook_openapi
from service.webhooks import routes as webhook_routes
from service.webhooks.ingest import Ingestor

log = logging.getLogger(__name__)


class RosterApp(FastAPI):
    """FastAPI, with the webhook door dispatched before the framework's middleware stack.

    The door is the hot path (thousands of requests a second) and uses nothing of the stack:
    no dependencies, no request object, its own error answers. Going around it saves about a
    fifth of each request's cost. It keeps the request metrics, and an unexpected error still
    gets a 500 (and is logged) as the stack would give it (see `CleverWebhook`).
    """

    webhook: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == webhook_routes.PATH
            and scope["method"] == "POST"
        ):
            scope["app"] = self
            await self.webhook(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def app_from_environment() -> FastAPI:
    """The app of one worker process of `roster api` with several workers."""
    settings = load_settings()
    configure_logging(settings.log_level)
    tracing.setup("api")
    app = create_app(settings)
    tune_gc()
    return app


def _telemetry() -> TelemetryConfig:
    provider = tracing.provider()
    if provider is None:
        return {"tracing": False, "metrics": False, "logs": False}
    return {
        "tracer_provider": provider,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
    }


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = make_engine(database_url(settings))
        app.state.kafka = KafkaGateway(
            bootstrap_servers(settings), durability=topic_durability(settings)
        )
        app.state.kafka.start()
        # The API starts whatever answers (/readyz tells which dependency does not); meanwhile it
        # logs, in one line per attempt, that it cannot reach the database (Kafka: the gateway).
        database_wait = asyncio.create_task(
            reach.wait_until_reachable(reach.database(database_url(settings))),
            name="database-wait",
        )
        app.state.webhook_keys = webhook_routes.webhook_keys(
            tuple(secret.get_secret_value() for secret in settings.webhook_secrets)
        )
        # The door's own driver connections: slow queries never hold up ingest, and there is
        # no pre-ping round trip (a batch on a dead connection answers 503 and the sender
        # retries on a fresh one).
        ingest_pool = DriverPool(driver_dsn(database_url(settings)), size=5)
        app.state.ingestor = Ingestor(
            ingest_pool,
            app.state.kafka,
            timeout=settings.publish_timeout_seconds,
            database_timeout=settings.webhook_database_timeout_seconds,
            max_queued_events=settings.webhook_max_queued_events,
        )
        try:
            yield
        finally:
            database_wait.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await database_wait
            await app.state.ingestor.drain()
            await app.state.kafka.stop()
            await ingest_pool.close()
            await app.state.engine.dispose()

    # FastAPI's native OpenTelemetry traces the routes (not the door: it traces itself) only when
    # this process traces (service/tracing.py); otherwise it is off: its per-request check of the
    # global providers costs a few percent of the webhook door's time. The docs
    # pages and the OpenAPI document are served only when ROSTER_API_DOCS asks for them (404
    # otherwise): they map every route for anyone; `app.openapi()` still builds the document.
    docs = settings.api_docs
    app = RosterApp(
        title="roster-sync",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=_telemetry(),
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.add_middleware(RequestMetrics)
    door = webhook_routes.CleverWebhook()
    app.webhook = door
    # Still a route: other methods get 405 from the router, and the OpenAPI entry is added below.
    app.router.routes.append(Route(webhook_routes.PATH, door, methods=["POST"]))
    app.include_router(health.router)
    app.include_router(events_routes.router)
    app.include_router(student_routes.router)
    app.include_router(roster_routes.router)
    app.include_router(program_routes.router)
    app.include_router(outbox_routes.router)
    app.include_router(district_routes.router)
    app.include_router(pull_routes.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            paths, components = webhook_openapi.openapi_paths()
            schema["paths"] = {**paths, **schema.get("paths", {})}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
