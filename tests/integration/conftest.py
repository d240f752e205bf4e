"""Session-wide real services for the integration tests (started once, stopped at the end)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import make_engine
from service.db.migrate import upgrade
from tests.support.services import Services, session_services


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
