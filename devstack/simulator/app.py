"""The simulated Clever over HTTP (Starlette): the OAuth token list, the v3.0 lists and records,
the X-RateLimit-* headers and 429s, the injected faults, and the /sim/ control API (control.py).

Every answer of the API and token list is logged (district, path, X-Roster-Process, status,
start and end). Order of checks on an API request: token (401), fault, rate limit (429), answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from devstack.simulator.control import control_routes
from devstack.simulator.district import SimDistrict
from devstack.simulator.simulator import CleverSimulator
from devstack.simulator.store import LIST_KINDS, ROLES

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
PROCESS_HEADER = "x-roster-process"


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"error": message}), status, headers, "application/json")


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def create_app(sim: CleverSimulator) -> Starlette:
    async def logged(
        request: Request, district_id: str | None, answer: Callable[[], Awaitable[Response]]
    ) -> Response:
        started = time.time()
        status = 500
        try:
            response = await answer()
            status = response.status_code
            return response
        finally:
            sim.log_request(
                district_id,
                request.url.path,
                request.url.query,
                request.headers.get(PROCESS_HEADER),
                status,
                started,
                time.time(),
            )

    async def tokens(request: Request) -> Response:
        async def answer() -> Response:
            if _basic(request) != (sim.client_id, sim.client_secret):
                return error(401, "invalid_client")
            if request.query_params.get("owner_type", "district") != "district":
                return error(400, "owner_type must be district")
            entries = sim.token_list(request.query_params.get("district"))
            body = {"data": entries, "links": [{"rel": "self", "uri": str(request.url.path)}]}
            return Response(orjson.dumps(body), 200, media_type="application/json")

        return await logged(request, request.query_params.get("district"), answer)

    async def api(request: Request) -> Response:
        token = _bearer(request)
        district = sim.district_of(token) if token else None
        path = request.url.path

        async def answer() -> Response:
            if district is None or token is None:
                return error(401, "invalid_token")
            fault = sim.faults.take(district.id, path)
            if fault is not None:
                if fault.kind == "rate_limit":
                    headers = sim.rate_limiter.headers(time.time() + fault.seconds, 0)
                    return error(429, "rate limit exceeded", headers)
                if fault.kind == "server_error":
                    return error(500, "internal server error (injected)")
                if fault.kind == "slow":
                    await asyncio.sleep(fault.seconds)
                elif await _hang(request, fault.seconds):
                    return Response(status_code=499)  # the client is gone: nobody reads this
            admitted, headers = sim.rate_limiter.admit(token)
            if not admitted:
                return error(429, "rate limit exceeded", headers)
            response = _answer(sim, district, request)
            response.headers.update(headers)
            return response

        return await logged(request, district.id if district else None, answer)

    return Starlette(
        routes=[
            Route("/oauth/tokens", tokens),
            Route("/v3.0/{kind}", api),
            Route("/v3.0/{kind}/{record_id}", api),
            Mount("/sim", routes=control_routes(sim)),
        ]
    )


async def _hang(request: Request, seconds: float) -> bool:
    """Waits `seconds` or until the client disconnects (True)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return True
        await asyncio.sleep(0.05)
    return False


def _answer(sim: CleverSimulator, district: SimDistrict, request: Request) -> Response:
    kind = request.path_params["kind"]
    record_id = request.path_params.get("record_id")
    if kind == "events":
        district.feed.expire(sim.clock.now() - sim.retention)
    elif kind not in LIST_KINDS:
        return error(404, f"unknown resource /v3.0/{kind}")
    if record_id is not None:
        return _one(sim, district, kind, record_id)
    return _list(sim, district, kind, request)


def _one(sim: CleverSimulator, district: SimDistrict, kind: str, record_id: str) -> Response:
    if kind == "events":
        if not district.feed.has(record_id):
            return error(404, "unknown event")
        item = district.feed.item(record_id)
    else:
        collection = district.kind(kind)
        if record_id not in collection:
            return error(404, "not found")
        item = collection.item(record_id)
    # An item is {"data": ..., "uri": ...}: a single record answers with the same two keys.
    return Response(item, 200, media_type="application/json")


def _list(sim: CleverSimulator, district: SimDistrict, kind: str, request: Request) -> Response:
    params = request.query_params
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        return error(400, "limit must be a number")
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, f"limit must be between 1 and {MAX_LIMIT}")
    after = params.get("starting_after")
    before = params.get("ending_before")
    if after and before:
        return error(400, "starting_after and ending_before exclude each other")
    if before == "last" and not sim.ending_before_last:
        return error(400, "ending_before must be a record id")
    item: Callable[[str], bytes]
    if kind == "events":
        if after and not district.feed.has(after):
            return error(404, "starting_after: unknown or expired event")
        ids, item = district.feed.ids, district.feed.item
    else:
        role = params.get("role")
        if role is not None and (kind != "users" or role not in ROLES):
            return error(400, f"unknown role {role!r}")
        collection = district.kind(kind)
        ids, item = collection.ids(role), collection.item
    if before:
        end = len(ids) if before == "last" else bisect.bisect_left(ids, before)
        begin = max(0, end - limit)
        more = False
    else:
        begin = bisect.bisect_right(ids, after) if after else 0
        end = min(len(ids), begin + limit)
        more = end < len(ids) or sim.next_on_last_page
    chosen = ids[begin:end]
    kept = {
        k: v for k, v in params.items() if k not in ("limit", "starting_after", "ending_before")
    }
    links: list[dict[str, Any]] = [{"rel": "self", "uri": _uri(kind, kept, limit, dict(params))}]
    if chosen and more:
        links.append(
            {"rel": "next", "uri": _uri(kind, kept, limit, {"starting_after": chosen[-1]})}
        )
    if chosen and before and begin > 0:
        links.append({"rel": "prev", "uri": _uri(kind, kept, limit, {"ending_before": chosen[0]})})
    body = b'{"data":[%s],"links":%s}' % (b",".join(map(item, chosen)), orjson.dumps(links))
    return Response(body, 200, media_type="application/json")


def _uri(kind: str, kept: dict[str, str], limit: int, paging: dict[str, str]) -> str:
    query = {**kept, "limit": str(limit)}
    query.update((k, v) for k, v in paging.items() if k in ("starting_after", "ending_before"))
    return f"/v3.0/{kind}?{urlencode(query)}"
