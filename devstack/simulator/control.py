"""The /sim/ control API: drives a simulator that runs in another process (`roster simulate`)
as tests drive an imported one. JSON in and out; a bad request gets 400 (404 for an unknown
district or record) with {"error": ...}. No auth: the simulator is a dev tool on loopback.

GET  /sim/                       seed, app credentials, districts with their tokens
POST /sim/districts              {"size": {Size fields}, "name"?} -> {"id"}
POST /sim/changes                {"district_id", "change": <name>, "args": {...}}
                                 -> {"changes": [{"what", "record_id", "event_ids"}]}
                                 names: new_student, move_student, change_section_roster,
                                 update_student, delete_student, unshare, reshare, a_day_of_changes
GET  /sim/faults, DELETE /sim/faults
POST /sim/faults                 {"kind", "count", "seconds", "district_id", "path"}
POST /sim/tokens/{id}/revoke     -> {}
POST /sim/tokens/{id}/rotate     -> {"token"}
POST /sim/clock                  {"advance_seconds"} -> {"now"}
POST /sim/expire                 {"older_than_seconds"?} -> {"expired"}
GET  /sim/truth?district_id=     -> {"students": {id: {district_id, schools, sections, deleted}}}
GET  /sim/events?district_id=    -> {"newest": id | null, "count": n}
GET  /sim/requests, DELETE /sim/requests
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.simulator.changes import Change
from devstack.simulator.faults import Fault
from devstack.simulator.seed import Size
from devstack.simulator.simulator import CleverSimulator

CHANGES = (
    "new_student",
    "move_student",
    "change_section_roster",
    "update_student",
    "delete_student",
    "unshare",
    "reshare",
    "a_day_of_changes",
)

Handler = Callable[[Request], Awaitable[Any]]


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status, media_type="application/json")


def _guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return _json(await handler(request))
        except LookupError as exc:
            return _json({"error": str(exc)}, 404)
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
            return _json({"error": f"{type(exc).__name__}: {exc}"}, 400)

    return endpoint


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    body = orjson.loads(raw) if raw else {}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _change_json(change: Change) -> dict[str, Any]:
    return dataclasses.asdict(change)


def control_routes(sim: CleverSimulator) -> list[Route]:
    async def info(_request: Request) -> Any:
        return {
            "seed": sim.seed,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
            "districts": [
                {"id": d, "name": sim.district(d).name, "token": sim.token(d)}
                for d in sim.district_ids
            ],
            "rate_limit": {"limit": sim.rate_limiter.limit, "window": sim.rate_limiter.window},
        }

    async def add_district(request: Request) -> Any:
        body = await _body(request)
        return {"id": sim.add_district(Size(**body.get("size", {})), body.get("name"))}

    async def change(request: Request) -> Any:
        body = await _body(request)
        name = body.get("change")
        if name not in CHANGES:
            raise ValueError(f"unknown change {name!r}; one of {', '.join(CHANGES)}")
        done = getattr(sim, name)(body["district_id"], **body.get("args", {}))
        changes = done if isinstance(done, list) else [done]
        return {"changes": [_change_json(c) for c in changes]}

    async def faults(request: Request) -> Any:
        if request.method == "POST":
            return sim.add_fault(Fault(**await _body(request))).as_json()
        if request.method == "DELETE":
            sim.clear_faults()
        return {"faults": [f.as_json() for f in sim.faults.pending]}

    async def tokens(request: Request) -> Any:
        district_id = request.path_params["district_id"]
        if request.path_params["action"] == "revoke":
            sim.revoke_token(district_id)
            return {}
        if request.path_params["action"] == "rotate":
            return {"token": sim.rotate_token(district_id)}
        raise LookupError("unknown token action (revoke or rotate)")

    async def clock(request: Request) -> Any:
        body = await _body(request)
        sim.advance_clock(timedelta(seconds=float(body["advance_seconds"])))
        return {"now": sim.clock.now().isoformat()}

    async def expire(request: Request) -> Any:
        body = await _body(request)
        older = body.get("older_than_seconds")
        span = None if older is None else timedelta(seconds=float(older))
        return {"expired": sim.expire_events(span)}

    async def truth(request: Request) -> Any:
        found = sim.truth(request.query_params.get("district_id"))
        return {"students": {k: v.as_json() for k, v in found.items()}}

    async def events(request: Request) -> Any:
        district_id = request.query_params["district_id"]
        return {
            "newest": sim.newest_event_id(district_id),
            "count": len(sim.district(district_id).feed),
        }

    async def requests(request: Request) -> Any:
        if request.method == "DELETE":
            sim.clear_requests()
        return {"requests": [r.as_json() for r in sim.requests]}

    return [
        Route("/", _guarded(info)),
        Route("/districts", _guarded(add_district), methods=["POST"]),
        Route("/changes", _guarded(change), methods=["POST"]),
        Route("/faults", _guarded(faults), methods=["GET", "POST", "DELETE"]),
        Route("/tokens/{district_id}/{action}", _guarded(tokens), methods=["POST"]),
        Route("/clock", _guarded(clock), methods=["POST"]),
        Route("/expire", _guarded(expire), methods=["POST"]),
        Route("/truth", _guarded(truth)),
        Route("/events", _guarded(events)),
        Route("/requests", _guarded(requests), methods=["GET", "DELETE"]),
    ]
