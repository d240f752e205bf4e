"""Fuzzing the webhook door through HTTP: whatever arrives, never a 5xx while Kafka is up."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tests.integration.conftest import Api
from tests.support.factory import Factory, page
from tests.support.webhook import signed_headers

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    factory = Factory(seed=draw(st.integers(0, 2**32)))
    event_type = draw(
        st.sampled_from(
            [
                "users.updated",
                "sections.created",
                "schools.deleted",
                "districts.updated",
                "resources.created",
            ]
        )
    )
    event = factory.event(event_type)
    mutated = copy.deepcopy(event)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(mutated)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = mutated
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON)
    return page([mutated, factory.event()]) if draw(st.booleans()) else mutated


def _fuzz(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:

        @FUZZ
        @given(st.one_of(JSON, mutated_events()))
        def signed_json(document: Any) -> None:
            body = json.dumps(document).encode()  # any JSON a client may send, big integers too
            response = client.post("/webhooks/clever", content=body, headers=signed_headers(body))
            assert response.status_code in (202, 400, 413), response.text
            assert response.headers["content-type"] == "application/json"

        @FUZZ
        @given(
            st.binary(max_size=200),
            st.dictionaries(
                st.sampled_from(
                    [
                        "content-type",
                        "webhook-id",
                        "webhook-timestamp",
                        "webhook-signature",
                        "content-encoding",
                        "traceparent",
                    ]
                ),
                # Values a client can legally send: printable, no surrounding blanks.
                st.from_regex(r"[!-~]([ -~]{0,38}[!-~])?", fullmatch=True),
            ),
        )
        def arbitrary_requests(body: bytes, headers: dict[str, str]) -> None:
            response = client.post("/webhooks/clever", content=body, headers=headers)
            assert response.status_code in (400, 401, 413, 415), response.text

        @FUZZ
        @given(st.binary(max_size=300))
        def signed_bytes(body: bytes) -> None:
            response = client.post("/webhooks/clever", content=body, headers=signed_headers(body))
            assert response.status_code in (202, 400, 413), response.text

        signed_json()
        arbitrary_requests()
        signed_bytes()


def _server_errors() -> float:
    """5xx answers counted so far in this process (other tests may have caused some on purpose),
    503 excepted: that is the door's answer to an unavailable dependency, not an error."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "roster_http_requests"
        for sample in metric.samples
        if sample.name.endswith("_total")
        and sample.labels["status"].startswith("5")
        and sample.labels["status"] != "503"
    )


async def test_no_5xx_for_any_input(api: Api) -> None:
    before = _server_errors()
    await asyncio.to_thread(_fuzz, api.base)
    assert _server_errors() == before


async def test_openapi_documents_the_webhook(api: Api) -> None:
    spec = api.app.openapi()  # not served over HTTP unless ROSTER_API_DOCS (test_api_docs.py)
    operation = spec["paths"]["/webhooks/clever"]["post"]
    assert {"202", "400", "401", "413", "415", "503"} <= set(operation["responses"])
    assert "oneOf" in operation["requestBody"]["content"]["application/json"]["schema"]
    header_names = {p["name"] for p in operation["parameters"]}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= header_names
