"""The Clever client against the simulator over real HTTP (no Kafka, no database): paging,
the rate-limit, retry and token rules, the cursor refusal and the client's own budget."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from devstack.kafka import free_port
from devstack.simulator import CleverSimulator, RunningSimulator, Size, serving
from service.clever import (
    AppCredentialsRejected,
    CleverClient,
    CleverUnavailable,
    CursorRefused,
    Page,
    RetryPolicy,
    TokenRejected,
    Tokens,
)
from service.settings import Settings

FAST = RetryPolicy(attempts=3, first=0.01, most=0.05)
SMALL = Size(schools=3, students=23, sections=6, contacts=2, staff=2)


@dataclass
class Seen:
    waits: list[tuple[str, float]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def rate_limited(self, district_id: str, wait: float) -> None:
        self.waits.append((district_id, wait))

    def error(self, district_id: str, kind: str) -> None:
        self.errors.append((district_id, kind))

    def kinds(self) -> list[str]:
        return [kind for _, kind in self.errors]


@dataclass
class Rig:
    sim: CleverSimulator
    running: RunningSimulator
    client: CleverClient
    seen: Seen

    @property
    def district(self) -> str:
        return self.sim.district_ids[0]

    def api_requests(self, path: str = "/v3.0/") -> list[Any]:
        return [r for r in self.sim.requests if r.path.startswith(path)]


@asynccontextmanager
async def rig(
    sim: CleverSimulator | None = None,
    *,
    manual: bool = False,
    retry: RetryPolicy = FAST,
    budget_window: float = 60.0,
    **settings: Any,
) -> AsyncIterator[Rig]:
    """A simulator served on a free port and a client of it (tokens discovered through the OAuth
    list, or given by hand with `manual`)."""
    sim = sim or CleverSimulator(districts=2, size=SMALL)
    async with serving(sim) as running:
        values: dict[str, Any] = {**running.settings_values(), **settings}
        if manual:
            del values["clever_client_id"], values["clever_client_secret"]
            values["clever_district_tokens"] = " ".join(
                f"{d}:{sim.token(d)}" for d in sim.district_ids
            )
        config = Settings.model_validate(values)
        seen = Seen()
        async with httpx.AsyncClient(timeout=5) as oauth_http:
            tokens = Tokens(config, oauth_http, retry=retry)
            await tokens.discover()
            client = CleverClient(
                config,
                tokens,
                observer=seen,
                process_id="test-process",
                retry=retry,
                budget_window=budget_window,
            )
            try:
                yield Rig(sim, running, client, seen)
            finally:
                await client.aclose()


async def collect(pages: AsyncIterator[Page]) -> list[Page]:
    return [page async for page in pages]


async def test_pages_follow_relative_next_links_with_the_configured_limit() -> None:
    async with rig(clever_page_limit=7) as r:
        pages = await collect(r.client.pages(r.district, "/v3.0/users", {"role": "student"}))
        students = r.sim.district(r.district).kind("users").ids("student")
        assert [rec["id"] for p in pages for rec in p.records] == students  # all, in id order
        assert len(pages) == math.ceil(len(students) / 7)
        assert all(len(p.records) == 7 for p in pages[:-1])
        assert pages[-1].next_uri is None
        assert all(p.next_uri and p.next_uri.startswith("/v3.0/users?") for p in pages[:-1])
        requests = r.api_requests("/v3.0/users")
        assert len(requests) == len(pages)
        assert all("limit=7" in q.query and "role=student" in q.query for q in requests)
        assert {q.process for q in requests} == {"test-process"}
        # The body is the page as Clever sent it; records are the inner `data` of each item.
        assert pages[0].body.startswith(b'{"data":[{"data":')


async def test_an_empty_page_ends_a_list_too() -> None:
    sim = CleverSimulator(size=SMALL, next_on_last_page=True)
    async with rig(sim, clever_page_limit=10) as r:
        pages = await collect(r.client.pages(r.district, "/v3.0/sections", {}))
        assert [len(p.records) for p in pages] == [6, 0]
        assert len(r.api_requests("/v3.0/sections")) == 2


async def test_a_429_waits_until_the_reset_and_is_not_a_failure() -> None:
    # One attempt only: were a 429 counted as a failure, the call would fail.
    async with rig(retry=RetryPolicy(attempts=1)) as r:
        r.sim.rate_limit_burst(2, reset_in=1.0, district_id=r.district)
        pages = await collect(r.client.pages(r.district, "/v3.0/schools", {}))
        assert len(pages[0].records) == 3
        first, second, third = r.api_requests("/v3.0/schools")
        assert [first.status, second.status, third.status] == [429, 429, 200]
        # Each retry started no sooner than the reset the 429 announced (whole Unix seconds).
        assert second.started >= math.ceil(first.started + 1.0) - 0.01
        assert third.started >= math.ceil(second.started + 1.0) - 0.01
        assert len(r.seen.waits) == 2 and all(wait > 0 for _, wait in r.seen.waits)
        assert r.seen.kinds() == ["rate_limited", "rate_limited"]


async def test_server_errors_are_retried_then_give_up() -> None:
    async with rig() as r:
        r.sim.server_errors(2, district_id=r.district)
        pages = await collect(r.client.pages(r.district, "/v3.0/terms", {}))
        assert len(pages[0].records) == 2
        assert [q.status for q in r.api_requests()] == [500, 500, 200]
        assert r.seen.kinds() == ["server_error", "server_error"]

        r.sim.clear_requests()
        r.sim.server_errors(5, district_id=r.district)
        with pytest.raises(CleverUnavailable) as caught:
            await collect(r.client.pages(r.district, "/v3.0/terms", {}))
        assert caught.value.kind == "server_error"
        assert [q.status for q in r.api_requests()] == [500, 500, 500]  # bounded: 3 attempts


async def test_a_hanging_page_times_out_and_is_asked_again() -> None:
    async with rig(clever_timeout_seconds=0.5, clever_page_limit=5) as r:
        r.sim.changes(r.district).a_day_of_changes(12)
        # The second page hangs (long past the client's timeout) once.
        pages = r.client.events(r.district, None)
        first = await anext(pages)
        r.sim.hang(1, seconds=60, district_id=r.district, path="/v3.0/events")
        rest = await collect(pages)
        events = [e["id"] for p in [first, *rest] for e in p.records]
        assert events == [e["id"] for e in r.sim.events(r.district)]
        assert "timeout" in r.seen.kinds()
        second_page = [
            q for q in r.api_requests("/v3.0/events") if first.records[-1]["id"] in q.query
        ]
        assert len(second_page) == 2  # asked twice: the hung one, then the answered one


async def test_connection_errors_are_retried_then_give_up() -> None:
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    settings = Settings(clever_api_url=nothing_listens, clever_district_tokens="d1:some-token")
    seen = Seen()
    async with httpx.AsyncClient() as http:
        policy = RetryPolicy(attempts=2, first=0.01, most=0.01)
        client = CleverClient(settings, Tokens(settings, http), observer=seen, retry=policy)
        try:
            with pytest.raises(CleverUnavailable) as caught:
                await collect(client.pages("d1", "/v3.0/schools", {}))
        finally:
            await client.aclose()
    assert caught.value.kind == "connection"
    assert seen.kinds() == ["connection", "connection"]
    assert "some-token" not in str(caught.value)


async def test_a_revoked_token_is_rejected_and_others_carry_on() -> None:
    async with rig() as r:
        revoked, other = r.sim.district_ids
        r.sim.revoke_token(revoked)
        with pytest.raises(TokenRejected) as caught:
            await collect(r.client.pages(revoked, "/v3.0/schools", {}))
        assert caught.value.district_id == revoked
        assert ("token_invalid" in r.seen.kinds()) and r.client.tokens.get(revoked) is None
        rereads = [q for q in r.sim.requests if q.path == "/oauth/tokens" and revoked in q.query]
        assert len(rereads) == 1  # the token was re-read once before giving up
        assert len(await collect(r.client.pages(other, "/v3.0/schools", {}))) == 1


async def test_a_rotated_token_is_reread_from_the_oauth_list() -> None:
    async with rig() as r:
        new = r.sim.rotate_token(r.district)
        pages = await collect(r.client.pages(r.district, "/v3.0/schools", {}))
        assert len(pages[0].records) == 3
        assert [q.status for q in r.api_requests()] == [401, 200]
        token = r.client.tokens.get(r.district)
        assert token is not None and token.token.get_secret_value() == new
        assert token.source == "discovered"


async def test_a_manual_token_is_not_reread() -> None:
    async with rig(manual=True) as r:
        assert r.client.tokens.get(r.district).source == "manual"  # type: ignore[union-attr]
        r.sim.rotate_token(r.district)
        with pytest.raises(TokenRejected):
            await collect(r.client.pages(r.district, "/v3.0/schools", {}))
        assert not [q for q in r.sim.requests if q.path == "/oauth/tokens"]


async def test_wrong_app_credentials_are_refused() -> None:
    sim = CleverSimulator(size=SMALL)
    async with serving(sim) as running, httpx.AsyncClient() as http:
        values = {**running.settings_values(), "clever_client_secret": "not-the-secret"}
        tokens = Tokens(Settings.model_validate(values), http, retry=FAST)
        with pytest.raises(AppCredentialsRejected) as caught:
            await tokens.discover()
        assert "not-the-secret" not in str(caught.value)


async def test_discovered_tokens_win_over_manual_ones() -> None:
    sim = CleverSimulator(districts=2, size=SMALL)
    first, second = sim.district_ids
    async with serving(sim) as running, httpx.AsyncClient() as http:
        values = {
            **running.settings_values(),
            "clever_district_tokens": f"{first}:stale-token 0123456789abcdef01234567:by-hand",
        }
        found = await Tokens(Settings.model_validate(values), http, retry=FAST).discover()
        assert {d: t.source for d, t in found.items()} == {
            first: "discovered",
            second: "discovered",
            "0123456789abcdef01234567": "manual",
        }
        assert found[first].token.get_secret_value() == sim.token(first)


async def test_an_expired_or_unknown_cursor_is_refused() -> None:
    async with rig() as r:
        r.sim.changes(r.district).a_day_of_changes(5)
        cursor = r.sim.newest_event_id(r.district)
        assert cursor is not None
        assert await collect(r.client.events(r.district, cursor)) != []  # still kept: fine
        with pytest.raises(CursorRefused) as caught:
            await collect(r.client.events(r.district, "ffffffff0000000000000000"))
        assert caught.value.status == 404
        r.sim.advance_clock(timedelta(days=31))
        with pytest.raises(CursorRefused):
            await collect(r.client.events(r.district, cursor))
        assert r.sim.events(r.district) == []  # the feed forgot them (30 days)


async def test_newest_event_id_with_and_without_ending_before_last() -> None:
    for supported in (True, False):
        sim = CleverSimulator(size=SMALL, ending_before_last=supported)
        async with rig(sim, clever_page_limit=4) as r:
            assert await r.client.newest_event_id(r.district) is None
            r.sim.changes(r.district).a_day_of_changes(9)
            newest = await r.client.newest_event_id(r.district)
            assert newest == r.sim.newest_event_id(r.district)
            queries = [q.query for q in r.api_requests("/v3.0/events")]
            assert "ending_before=last" in queries[0]
            paged_to_the_end = any("starting_after" in q for q in queries)
            assert paged_to_the_end is not supported


async def test_the_budget_keeps_the_client_under_the_limit() -> None:
    # Clever's limit as fixed windows of 2 s; the client's budget one request below it: the
    # request the client starts as its own window ends may reach Clever just before Clever's
    # window ends (Clever's window opens when the first request arrives, after it started).
    # Without the budget, the 7th of these quick requests would get a 429.
    budget = 5
    sim = CleverSimulator(
        size=Size(schools=1, students=11, sections=1), rate_limit=budget + 1, rate_window=2.0
    )
    async with rig(
        sim, budget_window=2.0, clever_page_limit=1, clever_requests_per_minute=budget
    ) as r:
        pages = await collect(r.client.pages(r.district, "/v3.0/users", {"role": "student"}))
        requests = r.api_requests()
        assert len(requests) == len(pages) == 11  # more than two windows' worth
        assert [q.status for q in requests if q.status != 200] == []
        assert r.seen.waits == []
