"""The door's memory and time per client are bounded: the route cache, and the body's deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.kafka import routing
from service.webhooks.body import BodyTimeout, read_limited


def test_the_route_cache_stays_bounded_and_its_routes_right() -> None:
    routes = routing.PartitionRoutes()
    partitions = list(range(12))
    routes.of(set(partitions))
    for number in range(2 * routing.MAX_ROUTES + 5):
        district = f"{number:024x}"
        partition, key = routes.route(district)
        assert key == district.encode()
        assert partition == routing.PARTITIONER(key, partitions, partitions)
        assert len(routes) <= routing.MAX_ROUTES


def _receiving(*chunks: bytes, then_stall: bool) -> Any:
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    if not then_stall:
        messages[-1]["more_body"] = False

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # a client that sends nothing more, ever
        raise AssertionError("unreachable")

    return receive


async def test_a_body_that_stops_arriving_is_given_up_at_the_deadline() -> None:
    # The outer timeout only turns a door without a deadline into a failure instead of a hang.
    async with asyncio.timeout(10):
        with pytest.raises(BodyTimeout):
            await read_limited(_receiving(b"{", b'"a"', then_stall=True), b"100", 1000, 0.05)


async def test_a_body_that_arrives_is_read_whole() -> None:
    body = await read_limited(_receiving(b"{", b'"a": 1}', then_stall=False), None, 1000, 5.0)
    assert body == b'{"a": 1}'
