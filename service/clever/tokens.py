"""District tokens: those given by hand (ROSTER_CLEVER_DISTRICT_TOKENS) and those the app's OAuth
token list holds (`GET <oauth>/oauth/tokens?owner_type=district`, HTTP Basic with the app's client
id and secret).

A discovered token wins over one given by hand for the same district: the list is Clever's current
answer, while a token typed into the environment goes stale when Clever rotates it. A token is a
SecretStr everywhere here: its repr hides it, and no message carries it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson
from pydantic import SecretStr

from service.clever.budget import reset_wait
from service.clever.envelope import next_link
from service.clever.errors import AppCredentialsRejected, UnexpectedAnswer
from service.clever.retries import RetryPolicy, Transient, with_retries
from service.settings import Settings

TOKENS_PATH = "/oauth/tokens"


@dataclass(frozen=True)
class DistrictToken:
    district_id: str
    token: SecretStr
    source: Literal["discovered", "manual"]


class Tokens:
    """The tokens this process knows, by district id. `discover()` refreshes them all;
    `reread()` one district's after a 401."""

    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, *, retry: RetryPolicy | None = None
    ) -> None:
        self._settings = settings
        self._http = http
        self._retry = retry or RetryPolicy()
        self._manual = {
            district_id: DistrictToken(district_id, token, "manual")
            for district_id, token in settings.clever_district_tokens
        }
        self._known: dict[str, DistrictToken] = dict(self._manual)

    @property
    def discovers(self) -> bool:
        """Whether the app's credentials are set (else only the tokens given by hand)."""
        return self._credentials() is not None

    async def discover(self) -> dict[str, DistrictToken]:
        """Every district's token: the OAuth list's (when the app's credentials are set) over the
        ones given by hand. On a failure (AppCredentialsRejected, CleverUnavailable, ...) the
        tokens known before stay as they were."""
        found = dict(self._manual)
        if self.discovers:
            found.update(await self._listed(None))
        self._known = found
        return dict(found)

    def get(self, district_id: str) -> DistrictToken | None:
        return self._known.get(district_id)

    def known(self) -> dict[str, DistrictToken]:
        return dict(self._known)

    async def reread(self, district_id: str) -> DistrictToken | None:
        """The district's token as the OAuth list holds it now (after a 401), or None when there is
        nothing to re-read (no app credentials) or the list no longer holds the district (then the
        district is forgotten until the next discovery finds it)."""
        if not self.discovers:
            return None
        token = (await self._listed(district_id)).get(district_id)
        if token is None:
            self._known.pop(district_id, None)
        else:
            self._known[district_id] = token
        return token

    def _credentials(self) -> tuple[str, str] | None:
        client_id = self._settings.clever_client_id
        secret = self._settings.clever_client_secret
        if client_id is None or secret is None:
            return None
        return client_id, secret.get_secret_value()

    async def _listed(self, district_id: str | None) -> dict[str, DistrictToken]:
        credentials = self._credentials()
        assert credentials is not None
        base = httpx.URL(self._settings.clever_oauth_url)
        params = {"owner_type": "district"}
        if district_id is not None:
            params["district"] = district_id
        url: httpx.URL | None = base.join(TOKENS_PATH).copy_merge_params(params)
        found: dict[str, DistrictToken] = {}
        seen: set[str] = set()
        while url is not None:
            if str(url) in seen:
                raise UnexpectedAnswer(200, "the token list links back to a page already read")
            seen.add(str(url))
            document = await self._get(url, credentials)
            for item in document.get("data") or []:
                token = _token_of(item)
                if token is not None and (district_id is None or token.district_id == district_id):
                    found[token.district_id] = token
            uri = next_link(document.get("links"))
            url = base.join(uri) if uri else None
        return found

    async def _get(self, url: httpx.URL, credentials: tuple[str, str]) -> dict[str, Any]:
        async def once() -> httpx.Response:
            try:
                response = await self._http.get(url, auth=credentials)
            except httpx.TimeoutException as exc:
                raise Transient("timeout", f"token list: {type(exc).__name__}") from None
            except httpx.TransportError as exc:
                raise Transient("connection", f"token list: {type(exc).__name__}") from None
            if response.status_code >= 500:
                raise Transient("server_error", f"token list: {response.status_code}")
            return response

        while True:
            response = await with_retries(once, self._retry, lambda _failure: None)
            if response.status_code != 429:
                break
            await asyncio.sleep(reset_wait(response.headers))
        if response.status_code in (401, 403):
            raise AppCredentialsRejected()
        if response.status_code != 200:
            raise UnexpectedAnswer(response.status_code, "token list")
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UnexpectedAnswer(200, "token list: the body is not JSON") from None
        if not isinstance(document, dict):
            raise UnexpectedAnswer(200, "token list: not an object")
        return document


def _token_of(item: object) -> DistrictToken | None:
    """A district token from one entry of the list (entries of other owners are skipped)."""
    if not isinstance(item, dict):
        return None
    owner = item.get("owner")
    token = item.get("access_token")
    if not isinstance(owner, dict) or owner.get("type") != "district":
        return None
    district_id = owner.get("id")
    if not isinstance(district_id, str) or not district_id or not isinstance(token, str):
        return None
    return DistrictToken(district_id, SecretStr(token), "discovered")
