"""`/readyz` against a real database whose schema is behind the code, and what `/readyz` and
`/metrics` cost the database when asked often."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import event

from service import health
from service.db.migrate import alembic_config, upgrade
from tests.integration.conftest import api_settings, running_api
from tests.support.services import Services, create_database, drop_database


def _previous_revision() -> str:
    scripts = ScriptDirectory.from_config(alembic_config())
    (head,) = scripts.get_heads()
    previous = scripts.get_revision(head).down_revision
    assert isinstance(previous, str)
    return previous


async def test_readyz_reports_the_schema_until_it_is_migrated(services: Services) -> None:
    name = "roster_readiness_test"
    url = await asyncio.to_thread(create_database, services.database_url, name)
    try:
        async with running_api(api_settings(services, database_url=url)) as api:
            empty = await api.client.get("/readyz")
            assert empty.status_code == 503 and empty.json()["down"] == ["schema"]
            assert empty.json()["checks"]["schema"].startswith("no migrations applied")

            previous = _previous_revision()
            await asyncio.to_thread(upgrade, url, previous)
            behind = await api.client.get("/readyz")
            assert behind.status_code == 503 and behind.json()["down"] == ["schema"]
            assert behind.json()["checks"]["schema"].startswith(f"at revision {previous},")

            await asyncio.to_thread(upgrade, url)
            ready = await api.client.get("/readyz")
            assert ready.status_code == 200, ready.json()
            assert ready.json()["checks"] == {"kafka": "ok", "database": "ok", "schema": "ok"}
    finally:
        await asyncio.to_thread(drop_database, services.database_url, name)


async def test_probes_and_scrapes_reuse_a_recent_database_read(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reuse for an hour: the counts below cannot depend on how fast this machine is.
    monkeypatch.setattr(health, "READY_REUSE_S", 3600.0)
    monkeypatch.setattr(health, "ALERTS_REUSE_S", 3600.0)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    async with running_api(api_settings(services)) as api:
        event.listen(api.app.state.engine.sync_engine, "before_cursor_execute", count)
        ready = await asyncio.gather(*[api.client.get("/readyz") for _ in range(5)])
        ready.append(await api.client.get("/readyz"))
        assert [r.status_code for r in ready] == [200] * 6
        scrapes = await asyncio.gather(*[api.client.get("/metrics") for _ in range(5)])
        scrapes.append(await api.client.get("/metrics"))
        assert [r.status_code for r in scrapes] == [200] * 6
        event.remove(api.app.state.engine.sync_engine, "before_cursor_execute", count)
    assert sum("FROM alembic_version" in s for s in statements) == 1
    assert sum("FROM alerts" in s for s in statements) == 1
