"""/docs, /redoc and /openapi.json map every route for anyone: served only with ROSTER_API_DOCS."""

from __future__ import annotations

import httpx
import pytest

from service.app import create_app
from service.settings import Settings

DOCS = ("/docs", "/redoc", "/openapi.json")


async def _statuses(settings: Settings) -> list[int]:
    # No lifespan: these routes touch no database or broker.
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return [(await client.get(path)).status_code for path in DOCS]


async def test_the_docs_are_not_served_by_default() -> None:
    assert await _statuses(Settings(api_docs=False)) == [404, 404, 404]


async def test_the_docs_are_served_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSTER_API_DOCS", "true")
    assert await _statuses(Settings()) == [200, 200, 200]


def test_the_docs_are_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROSTER_API_DOCS", raising=False)
    assert Settings().api_docs is False


def test_the_document_is_still_built_for_tools() -> None:
    assert "/webhooks/clever" in create_app(Settings(api_docs=False)).openapi()["paths"]
