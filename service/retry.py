"""The one way this service retries a step with backoff (tenacity underneath).

Every loop that waits for a dependency to come back uses it: a worker waiting for Kafka's topics
(service/worker.py), the API's background Kafka connection (service/kafka/gateway.py), the
consumer's transaction and after-commit steps (consumers/runner.py) and the relay's rounds
(service/outbox/relay.py). What each of them retries, and what a stop means to it, stays with it:
here is only the shape they share.
(The Clever client's calls are retried otherwise, with jitter and a bound, since many pollers
share one remote API: service/clever/retries.py.)

- The waits are `first` seconds, then twice the previous one, at most `most` (no jitter).
- Only an `Exception` that `retry_if` accepts is retried; any other failure (cancellation too)
  propagates at once, as it is.
- There is no limit on attempts: a caller ends the retrying by returning (a step that sees its stop
  event set returns) or by raising from `on_retry` (called before each wait with the failure and
  the wait; it logs).
- A `stop` event, when given, ends a wait as soon as it is set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

T = TypeVar("T")

OnRetry = Callable[[Exception, float], Awaitable[None] | None]


def _any(_exc: Exception) -> bool:
    return True


def doubling(first: float, most: float) -> Callable[[RetryCallState], float]:
    """`first`, then twice the previous wait, at most `most` (`first` itself is never cut)."""
    later = wait_exponential(multiplier=first, max=most)
    return lambda state: first if state.attempt_number == 1 else later(state)


def _failure(state: RetryCallState) -> Exception:
    exc = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(exc, Exception)  # only an Exception is ever retried
    return exc


async def retrying(
    step: Callable[[], Awaitable[T]],
    *,
    first: float,
    most: float,
    on_retry: OnRetry,
    retry_if: Callable[[Exception], bool] = _any,
    stop: asyncio.Event | None = None,
) -> T:
    """Awaits `step()` until it returns, retrying the failures `retry_if` accepts (see above)."""

    async def attempt() -> T:
        # tenacity awaits only a coroutine function's result: `step` may be a plain callable
        # returning an awaitable (a lambda), which tenacity would call and never await.
        return await step()

    async def before_wait(state: RetryCallState) -> None:
        pending = on_retry(_failure(state), state.upcoming_sleep)
        if pending is not None:
            await pending

    async def wait(seconds: float) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)  # a stop ends the wait

    # A new AsyncRetrying per call: it keeps per-call state, and calls run concurrently.
    attempts = AsyncRetrying(
        sleep=wait,
        wait=doubling(first, most),
        retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and retry_if(exc)),
        before_sleep=before_wait,
    )
    return await attempts(attempt)
