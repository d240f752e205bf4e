"""The Clever API client: one per process, over one kept-alive httpx.AsyncClient.

Per call, in this order (each rule is the documented practice of clever.md, "Pulling from Clever"):
- the token's request budget (budget.py) is taken first, so this client alone stays under
  Clever's per-token limit;
- 429: wait until `X-RateLimit-Reset` (the whole token waits), then ask again; not a failure;
- 5xx, timeouts (the whole request, body included, within clever_timeout_seconds) and connection
  errors: retried with jittered backoff, bounded (retries.py), then CleverUnavailable;
- 401: the district's token is re-read from the OAuth list once and the call retried with it;
  still 401, or no token, TokenRejected;
- any other non-200: UnexpectedAnswer (on the events feed with a cursor, 400/404/410 are
  CursorRefused).
Each request carries `User-Agent: roster-sync/<version>` and `X-Roster-Process: <process id>`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Protocol

import httpx

from service.clever.budget import RequestBudget, reset_wait
from service.clever.envelope import Page, read_page
from service.clever.errors import CursorRefused, TokenRejected, UnexpectedAnswer
from service.clever.retries import RetryPolicy, Transient, with_retries
from service.clever.tokens import DistrictToken, Tokens
from service.settings import Settings

EVENTS_PATH = "/v3.0/events"
PROCESS_HEADER = "X-Roster-Process"
CURSOR_REFUSALS = frozenset({400, 404, 410})


def _version() -> str:
    try:
        return metadata.version("roster-sync")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"roster-sync/{_version()}"


class ClientObserver(Protocol):
    """Metrics hooks, per district. `error` sees every failed attempt (kinds: rate_limited,
    server_error, timeout, connection, token_invalid), retried or not."""

    def rate_limited(self, district_id: str, wait: float) -> None: ...

    def error(self, district_id: str, kind: str) -> None: ...


class _Quiet:
    def rate_limited(self, district_id: str, wait: float) -> None:
        pass

    def error(self, district_id: str, kind: str) -> None:
        pass


def default_process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class CleverClient:
    def __init__(
        self,
        settings: Settings,
        tokens: Tokens,
        *,
        observer: ClientObserver | None = None,
        process_id: str | None = None,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        budget_window: float = 60.0,
    ) -> None:
        """`http`: a client to share (closed by its owner); else one of its own, closed by
        `aclose`. `budget_window`: the span of the per-token budget (tests shorten it)."""
        self._settings = settings
        self.tokens = tokens
        self._observer: ClientObserver = observer or _Quiet()
        self.process_id = process_id or default_process_id()
        self._owns_http = http is None
        self._http = http or new_http_client(settings)
        self._retry = retry or RetryPolicy()
        self._budget_window = budget_window
        self._budgets: dict[str, RequestBudget] = {}  # by token value: the limit is per token
        self._base = httpx.URL(settings.clever_api_url)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def pages(
        self, district_id: str, path: str, params: dict[str, str]
    ) -> AsyncIterator[Page]:
        """GET `path` with `params` and `limit=<clever_page_limit>` (unless `params` has one),
        then each `links[rel=next]` until a page has no next link or no records."""
        async for page in self._pages(district_id, path, params, cursor=None):
            yield page

    async def events(self, district_id: str, starting_after: str | None) -> AsyncIterator[Page]:
        """The district's events feed after `starting_after` (from the oldest kept without it),
        oldest first. CursorRefused when Clever refuses the cursor (expired or unknown)."""
        params = {"starting_after": starting_after} if starting_after else {}
        async for page in self._pages(district_id, EVENTS_PATH, params, cursor=starting_after):
            yield page

    async def newest_event_id(self, district_id: str) -> str | None:
        """The id of the district's newest event (None: no events), read with
        `ending_before=last&limit=1`; a server that refuses that is paged to the end instead."""
        try:
            page = await self._page(
                district_id, self._url(EVENTS_PATH, {"ending_before": "last", "limit": "1"}), None
            )
        except UnexpectedAnswer as exc:
            if exc.status not in (400, 404, 422):
                raise
        else:
            return _last_id(page)
        newest: str | None = None
        async for page in self.pages(district_id, EVENTS_PATH, {}):
            newest = _last_id(page) or newest
        return newest

    async def _pages(
        self, district_id: str, path: str, params: dict[str, str], *, cursor: str | None
    ) -> AsyncIterator[Page]:
        url: httpx.URL | None = self._url(
            path, {"limit": str(self._settings.clever_page_limit), **params}
        )
        read: set[str] = set()
        while url is not None:
            if str(url) in read:  # a server bug would otherwise page forever
                raise UnexpectedAnswer(200, f"{path}: a next link points back to a page read")
            read.add(str(url))
            page = await self._page(district_id, url, cursor)
            yield page
            if not page.records or page.next_uri is None:
                return
            url = self._base.join(page.next_uri)  # relative to the API host

    def _url(self, path: str, params: dict[str, str]) -> httpx.URL:
        return self._base.join(path).copy_merge_params(params)

    async def _page(self, district_id: str, url: httpx.URL, cursor: str | None) -> Page:
        response = await self._get(district_id, url)
        uri = url.raw_path.decode("ascii")
        if response.status_code == 200:
            return read_page(response.content, uri=uri)
        if cursor is not None and response.status_code in CURSOR_REFUSALS:
            raise CursorRefused(district_id, cursor, response.status_code)
        raise UnexpectedAnswer(response.status_code, url.path)

    async def _get(self, district_id: str, url: httpx.URL) -> httpx.Response:
        """The answer to GET `url` after the rate-limit, retry and token rules (see the module)."""
        token = self.tokens.get(district_id)
        reread = False
        while True:
            if token is None:
                self._observer.error(district_id, "token_invalid")
                raise TokenRejected(district_id)
            response = await with_retries(
                functools.partial(self._attempt, district_id, token, url),
                self._retry,
                lambda failure: self._observer.error(district_id, failure.kind),
            )
            if response.status_code == 429:
                wait = reset_wait(response.headers)
                self._budget(token).block_for(wait)
                self._observer.rate_limited(district_id, wait)
                self._observer.error(district_id, "rate_limited")
                continue
            if response.status_code == 401:
                if reread:
                    token = None
                    continue
                reread = True
                token = await self.tokens.reread(district_id)
                continue
            return response

    async def _attempt(
        self, district_id: str, token: DistrictToken, url: httpx.URL
    ) -> httpx.Response:
        await self._budget(token).take()
        headers = {
            "Authorization": f"Bearer {token.token.get_secret_value()}",
            PROCESS_HEADER: self.process_id,
        }
        try:
            async with asyncio.timeout(self._settings.clever_timeout_seconds):
                response = await self._http.get(url, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            raise Transient("timeout", f"{url.path}: no answer in time") from None
        except httpx.TransportError as exc:
            raise Transient("connection", f"{url.path}: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise Transient("server_error", f"{url.path}: {response.status_code}")
        return response

    def _budget(self, token: DistrictToken) -> RequestBudget:
        key = token.token.get_secret_value()
        budget = self._budgets.get(key)
        if budget is None:
            budget = RequestBudget(self._settings.clever_requests_per_minute, self._budget_window)
            self._budgets[key] = budget
        return budget


def new_http_client(settings: Settings) -> httpx.AsyncClient:
    """Kept-alive connections, enough for every district polled at once plus a backfill each."""
    connections = max(10, 2 * settings.poll_max_concurrent_districts)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.clever_timeout_seconds),
        limits=httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=30.0,
        ),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        follow_redirects=False,
    )


def _last_id(page: Page) -> str | None:
    if not page.records:
        return None
    last = page.records[-1].get("id")
    return last if isinstance(last, str) else None
