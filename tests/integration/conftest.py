"""Session-wide real services for the integration tests (started once, stopped at the end)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.kafka import free_port
from service.app import create_app
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.settings import Settings
from tests.support.services import Services, session_services
from tests.support.webhook import ADMIN_TOKEN, OLD_SECRET, SECRET


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with session_services() as running:
        upgrade(running.database_url)
        yield running


@pytest.fixture(scope="session")
async def engine(services: Services) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(services.database_url, pool_size=5)
    yield engine
    await engine.dispose()


@dataclass
class Api:
    base: str
    app: FastAPI
    client: httpx.AsyncClient


def api_settings(services: Services, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": services.database_url,
        "kafka_bootstrap_servers": services.kafka_bootstrap,
        "webhook_secrets": f"{SECRET} {OLD_SECRET}",
        "admin_token": ADMIN_TOKEN,
        "publish_timeout_seconds": 3.0,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    """The real app behind a real uvicorn server on a free loopback port."""
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False
        )
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no started event)
            await asyncio.sleep(0.02)
        await app.state.kafka.connected.wait()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        try:
            yield Api(base, app, client)
        finally:
            server.should_exit = True
            await task


@pytest.fixture(scope="module")
async def api(services: Services) -> AsyncIterator[Api]:
    async with running_api(api_settings(services)) as running:
        yield running
