"""A client that opens a webhook request and never finishes its body is answered and dropped."""

from __future__ import annotations

import asyncio

import pytest

from service.webhooks import body
from tests.integration.conftest import api_settings, running_api
from tests.support.services import Services


async def test_a_stalled_body_gets_408_and_the_connection_is_closed(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(body, "BODY_DEADLINE_S", 0.5)
    async with running_api(api_settings(services)) as api:
        host, port = api.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /webhooks/clever HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 5000000\r\n\r\n" + b'{"data": ['
        )
        try:
            await writer.drain()
            # Only a guard against hanging when the door has no deadline (what this catches).
            async with asyncio.timeout(30):
                answer = await reader.read()  # until the server closes the connection
        finally:
            writer.close()  # else the server's shutdown waits for this connection
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"error":"body_timeout"' in answer
