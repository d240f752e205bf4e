"""`Recent`: a result reused for a while, one fetch shared by concurrent callers (a fake clock:
nothing here depends on real time)."""

from __future__ import annotations

import asyncio

import pytest

from service.recent import Recent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_result_is_reused_until_it_expires() -> None:
    clock, calls = Clock(), []

    async def fetch() -> int:
        calls.append(clock.now)
        return len(calls)

    recent = Recent(fetch, 5.0, clock=clock)
    assert [await recent.get(), await recent.get()] == [1, 1]
    clock.now += 4.9
    assert await recent.get() == 1
    clock.now += 0.1
    assert await recent.get() == 2
    assert len(calls) == 2


async def test_concurrent_callers_share_one_fetch() -> None:
    release = asyncio.Event()
    calls = 0

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "read"

    recent = Recent(fetch, 5.0, clock=Clock())
    waiting = [asyncio.create_task(recent.get()) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == ["read"] * 5
    assert calls == 1


async def test_a_result_not_worth_reusing_is_read_afresh() -> None:
    answers = iter([{"database": "down"}, {"database": "down"}, {}, {"kafka": "down"}])

    async def fetch() -> dict[str, str]:
        return next(answers)

    recent = Recent(fetch, 5.0, reuse=lambda problems: not problems, clock=Clock())
    assert await recent.get() == {"database": "down"}
    assert await recent.get() == {"database": "down"}
    assert await recent.get() == {}
    assert await recent.get() == {}  # healthy: reused, the fourth answer is never read


async def test_a_failed_fetch_is_not_kept() -> None:
    outcomes: list[Exception | int] = [RuntimeError("no database"), 7]

    async def fetch() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    recent = Recent(fetch, 5.0, clock=Clock())
    with pytest.raises(RuntimeError):
        await recent.get()
    assert await recent.get() == 7


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_fetch() -> None:
    release = asyncio.Event()

    async def fetch() -> str:
        await release.wait()
        return "read"

    recent = Recent(fetch, 5.0, clock=Clock())
    impatient = asyncio.create_task(recent.get())
    patient = asyncio.create_task(recent.get())
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    assert await patient == "read"
    with pytest.raises(asyncio.CancelledError):
        await impatient
