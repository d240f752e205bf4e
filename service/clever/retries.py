"""How the client retries a call Clever failed: 5xx answers, timeouts and connection errors, with
full-jitter exponential backoff (tenacity's `wait_random_exponential`) and a bounded number of
attempts, then CleverUnavailable.

Unlike service/retry.py (no limit, no jitter: one process waiting for its own broker or
database), many pollers share Clever: jitter keeps them from retrying in step, and the bound
hands the failure to the caller, which marks the district and carries on with the others.
A 429 is not a failure here: the client waits for the reset and asks again (client.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from service.clever.errors import CleverUnavailable

T = TypeVar("T")

KINDS = ("server_error", "timeout", "connection")


class Transient(Exception):
    """A failure worth another attempt; `kind` is one of KINDS."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` in all; before attempt n+1 a random wait in [0, min(most, first * 2**n)]."""

    attempts: int = 6
    first: float = 0.5
    most: float = 20.0


async def with_retries(
    step: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    on_failure: Callable[[Transient], None],
) -> T:
    """Awaits `step()`, retrying Transient failures (`on_failure` sees each one) as `policy` says;
    CleverUnavailable after the last. Any other exception propagates at once."""

    def seen(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient):
            on_failure(exc)

    async def attempt() -> T:
        return await step()

    attempts = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_random_exponential(multiplier=policy.first, max=policy.most),
        retry=retry_if_exception_type(Transient),
        after=seen,
        reraise=True,
    )
    try:
        return await attempts(attempt)
    except Transient as exc:
        raise CleverUnavailable(exc.kind, exc.detail) from None
