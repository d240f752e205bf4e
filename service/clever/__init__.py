"""Clever's HTTP APIs (the OAuth token list, the Data API, the Events API): how to reach them,
nothing of the roster."""

from service.clever.client import CleverClient, ClientObserver, new_http_client
from service.clever.envelope import Page
from service.clever.errors import (
    AppCredentialsRejected,
    CleverError,
    CleverUnavailable,
    CursorRefused,
    TokenRejected,
    UnexpectedAnswer,
)
from service.clever.retries import RetryPolicy
from service.clever.tokens import DistrictToken, Tokens

__all__ = [
    "AppCredentialsRejected",
    "CleverClient",
    "CleverError",
    "CleverUnavailable",
    "ClientObserver",
    "CursorRefused",
    "DistrictToken",
    "Page",
    "RetryPolicy",
    "TokenRejected",
    "Tokens",
    "UnexpectedAnswer",
    "new_http_client",
]
