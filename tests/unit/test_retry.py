"""The one retry helper: its schedule, what it retries, and how a stop and a caller end it."""

from __future__ import annotations

import asyncio

import pytest
from tenacity import RetryCallState

from service.retry import doubling, retrying


def _waits(first: float, most: float, attempts: int) -> list[float]:
    wait = doubling(first, most)
    waits = []
    for number in range(1, attempts + 1):
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = number
        waits.append(wait(state))
    return waits


def _doubling_loop(first: float, most: float, attempts: int) -> list[float]:
    """The hand-written loops this helper replaced: `delay = min(delay * 2, most)`."""
    delay, waits = first, []
    for _ in range(attempts):
        waits.append(delay)
        delay = min(delay * 2, most)
    return waits


@pytest.mark.parametrize(("first", "most"), [(0.2, 5.0), (0.1, 10.0), (0.1, 0.5), (0.1, 0.05)])
def test_the_waits_double_up_to_a_ceiling_as_the_old_loops_did(first: float, most: float) -> None:
    assert _waits(first, most, 12) == _doubling_loop(first, most, 12)


async def test_retries_what_it_is_told_to_and_reports_each_wait() -> None:
    outcomes: list[Exception | str] = [OSError("down"), OSError("down"), "done"]
    seen: list[tuple[str, float]] = []

    async def step() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def failed(exc: Exception, wait: float) -> None:
        seen.append((type(exc).__name__, wait))

    assert await retrying(step, first=0.001, most=0.002, on_retry=failed) == "done"
    assert seen == [("OSError", 0.001), ("OSError", 0.002)]


async def test_a_failure_not_retried_propagates_at_once() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("poison")

    with pytest.raises(ValueError, match="poison"):
        await retrying(
            step,
            first=0.001,
            most=0.001,
            on_retry=lambda *_: None,
            retry_if=lambda exc: isinstance(exc, OSError),
        )
    assert calls == 1


async def test_on_retry_may_end_the_retrying_by_raising() -> None:
    async def step() -> None:
        raise OSError("down")

    async def failed(exc: Exception, _wait: float) -> None:
        raise RuntimeError("given up") from exc

    with pytest.raises(RuntimeError, match="given up") as raised:
        await retrying(step, first=0.001, most=0.001, on_retry=failed)
    assert isinstance(raised.value.__cause__, OSError)


async def test_a_stop_ends_the_wait_and_the_step_decides_what_follows() -> None:
    stop = asyncio.Event()
    attempts = 0

    async def step() -> bool:
        nonlocal attempts
        if stop.is_set():
            return False
        attempts += 1
        raise OSError("down")

    def failed(_exc: Exception, _wait: float) -> None:
        stop.set()  # arrives while the helper would wait an hour

    done = await asyncio.wait_for(
        retrying(step, first=3600, most=3600, on_retry=failed, stop=stop), timeout=5
    )
    assert done is False and attempts == 1


async def test_cancellation_is_never_retried() -> None:
    async def step() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retrying(step, first=0.001, most=0.001, on_retry=lambda *_: None)


async def test_a_step_that_only_returns_an_awaitable_is_awaited() -> None:
    """As the runner passes its after-commit step: a lambda returning a coroutine."""
    done: list[str] = []

    async def after_commit(what: str) -> str:
        done.append(what)
        return what

    got = await retrying(
        lambda: after_commit("dead letters"), first=0.001, most=0.001, on_retry=lambda *_: None
    )
    assert got == "dead letters" and done == ["dead letters"]
