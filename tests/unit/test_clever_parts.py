"""The Clever client's pure parts: the envelope, the request budget, the 429 wait, the bounded
retries."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from service.clever.budget import RequestBudget, reset_wait
from service.clever.envelope import next_link, read_page
from service.clever.errors import CleverUnavailable, UnexpectedAnswer
from service.clever.retries import RetryPolicy, Transient, with_retries


def test_a_page_reads_the_inner_records_and_the_next_link() -> None:
    body = orjson.dumps(
        {
            "data": [{"data": {"id": "a"}, "uri": "/v3.0/users/a"}, {"data": {"id": "b"}}],
            "links": [
                {"rel": "self", "uri": "/v3.0/users?limit=2"},
                {"rel": "next", "uri": "/v3.0/users?limit=2&starting_after=b"},
            ],
        }
    )
    page = read_page(body, uri="/v3.0/users")
    assert page.records == [{"id": "a"}, {"id": "b"}]
    assert page.next_uri == "/v3.0/users?limit=2&starting_after=b"
    assert page.body is body


@pytest.mark.parametrize(
    "links", [None, [], [{"rel": "self", "uri": "/x"}], [{"rel": "next"}], "next"]
)
def test_no_next_link(links: object) -> None:
    assert next_link(links) is None


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"links": []}', b'{"data": [1]}', b'{"data": [{"uri": "/x"}]}']
)
def test_a_body_that_is_not_the_envelope_is_an_unexpected_answer(body: bytes) -> None:
    with pytest.raises(UnexpectedAnswer):
        read_page(body)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_allows_per_window_starts_in_any_window() -> None:
    clock = FakeClock()
    budget = RequestBudget(3, 60.0, clock=clock)
    for at in (0.0, 10.0, 20.0):
        clock.now = 1000.0 + at
        assert budget.delay() == 0
        budget._starts.append(clock.now)  # what take() records
    clock.now = 1030.0
    assert budget.delay() == 30.0  # until the first start leaves the window
    clock.now = 1060.0
    assert budget.delay() == 0


def test_a_block_holds_every_request_of_the_token() -> None:
    clock = FakeClock()
    budget = RequestBudget(100, 60.0, clock=clock)
    budget.block_for(5.0)
    budget.block_for(2.0)  # a shorter block does not shorten the longer one
    assert budget.delay() == 5.0
    clock.now += 5.0
    assert budget.delay() == 0


async def test_take_waits_for_the_budget() -> None:
    budget = RequestBudget(2, 0.2)
    for _ in range(2):
        await budget.take()
    assert budget.delay() > 0
    await asyncio.wait_for(budget.take(), timeout=5)
    assert len(budget._starts) <= 2


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"x-ratelimit-reset": "1010"}, 10.0),
        ({"x-ratelimit-reset": "990"}, 0.0),  # already past
        ({"x-ratelimit-reset": "5000"}, 65.0),  # capped
        ({"x-ratelimit-reset": "soon"}, 60.0),
        ({}, 60.0),
    ],
)
def test_reset_wait(headers: dict[str, str], wait: float) -> None:
    assert reset_wait(headers, now=1000.0) == wait


async def test_retries_are_bounded_and_report_each_failure() -> None:
    calls: list[int] = []
    failures: list[str] = []

    async def step() -> str:
        calls.append(1)
        raise Transient("timeout", "no answer")

    with pytest.raises(CleverUnavailable) as caught:
        await with_retries(
            step,
            RetryPolicy(attempts=4, first=0.001, most=0.001),
            lambda f: failures.append(f.kind),
        )
    assert caught.value.kind == "timeout"
    assert len(calls) == 4 and failures == ["timeout"] * 4


async def test_a_success_after_failures_is_returned_and_other_errors_pass_at_once() -> None:
    outcomes: list[Exception | str] = [Transient("server_error", "500"), "ok"]

    async def step() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await with_retries(step, RetryPolicy(first=0.001, most=0.001), lambda f: None) == "ok"

    calls: list[int] = []

    async def refused() -> str:
        calls.append(1)
        raise UnexpectedAnswer(403, "no")

    with pytest.raises(UnexpectedAnswer):
        await with_retries(refused, RetryPolicy(first=0.001), lambda f: None)
    assert len(calls) == 1
