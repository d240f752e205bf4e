"""The API process: FastAPI app factory and the resources its lifespan owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import Route

from service import health
from service.db.engine import database_url, make_engine
from service.events import routes as events_routes
from service.kafka.config import bootstrap_servers
from service.kafka.gateway import KafkaGateway
from service.metrics import RequestMetrics
from service.programs import routes as program_routes
from service.roster import routes as roster_routes
from service.settings import Settings
from service.webhooks import routes as webhook_routes
from service.webhooks.ingest import Ingestor


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = make_engine(database_url(settings))
        app.state.kafka = KafkaGateway(bootstrap_servers(settings))
        app.state.kafka.start()
        app.state.webhook_keys = webhook_routes.webhook_keys(
            tuple(secret.get_secret_value() for secret in settings.webhook_secrets)
        )
        app.state.ingestor = Ingestor(
            app.state.engine, app.state.kafka, timeout=settings.publish_timeout_seconds
        )
        try:
            yield
        finally:
            await app.state.ingestor.drain()
            await app.state.kafka.stop()
            await app.state.engine.dispose()

    app = FastAPI(title="roster-sync", version="0.1.0", lifespan=lifespan)
    app.add_middleware(RequestMetrics)
    app.router.routes.append(
        Route(webhook_routes.PATH, webhook_routes.CleverWebhook(), methods=["POST"])
    )
    app.include_router(health.router)
    app.include_router(events_routes.router)
    app.include_router(roster_routes.router)
    app.include_router(program_routes.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            paths, components = webhook_routes.openapi_paths()
            schema["paths"] = {**paths, **schema.get("paths", {})}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
