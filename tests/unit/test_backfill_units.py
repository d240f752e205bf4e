"""The backfill's pure parts: synthetic event ids and shapes, the progress display's rates, ETAs
and expected totals, and the command's exit codes."""

from __future__ import annotations

import io

from rich.console import Console

from service.pull.backfill import event_id, synthetic_event
from service.pull.command import Progress
from service.pull.progress import BackfillDisplay, Rates, exit_code, expected_totals
from service.webhooks.parse import parse_body

DISTRICT = "5f0c1a2b3c4d5e6f7a8b9c02"
SCHOOL = {"id": "5f0c1a2b3c4d5e6f7a8b9c03", "district": DISTRICT, "name": "Oak Elementary"}


def test_event_ids_are_deterministic_per_run_record_and_action() -> None:
    first = event_id("b1", "schools", SCHOOL["id"], "updated")
    assert first == event_id("b1", "schools", SCHOOL["id"], "updated")
    assert len(first) == 24 and int(first, 16) >= 0
    others = {
        event_id("b2", "schools", SCHOOL["id"], "updated"),
        event_id("b1", "users", SCHOOL["id"], "updated"),
        event_id("b1", "schools", SCHOOL["id"], "deleted"),
    }
    assert first not in others and len(others) == 3


def test_a_synthetic_event_is_a_valid_clever_event_carrying_the_record_as_is() -> None:
    import orjson

    event = synthetic_event("b1", "schools", "updated", SCHOOL, "2026-12-01T10:00:00.5Z")
    (parsed,) = parse_body(orjson.dumps(event), max_events=1)
    assert parsed.event_type == "schools.updated"
    assert parsed.district_id == DISTRICT
    assert parsed.event_id == event_id("b1", "schools", SCHOOL["id"], "updated")
    assert orjson.loads(parsed.raw)["data"]["object"] == SCHOOL


def test_rates_over_the_window_and_the_eta() -> None:
    rates = Rates(window=5.0)
    assert rates.rate() is None
    rates.add(0.0, {"users": 0})
    rates.add(1.0, {"users": 100, "sections": 10})
    assert rates.rate("users") == 100.0
    assert rates.rate() == 110.0
    for second in range(2, 12):
        rates.add(float(second), {"users": 100 * second, "sections": 10})
    assert rates.rate("users") == 100.0  # old samples leave the window
    assert rates.rate("sections") == 0.0
    assert Rates.eta(1_000, 500, 100.0) == 5.0
    assert Rates.eta(1_000, 1_000, None) == 0.0
    assert Rates.eta(1_000, 10, 0.0) is None


def test_expected_totals_take_the_previous_run_never_less_than_this_one() -> None:
    counts = {"users": {"read": 50, "published": 20}, "schools": {"read": 7, "published": 7}}
    previous = {"counts": {"users": {"read": 40, "published": 40}, "sections": {"read": 9}}}
    totals = expected_totals(counts, previous)
    assert totals["users"] == 50 and totals["schools"] == 7 and totals["sections"] == 9
    assert expected_totals(counts, None)["users"] == 50


def test_exit_codes() -> None:
    assert [exit_code(s) for s in ("succeeded", "guarded", "failed", "running")] == [0, 4, 1, 1]


def test_the_display_without_a_terminal_prints_one_line_per_change_and_a_summary() -> None:
    out = io.StringIO()
    display = BackfillDisplay(Console(file=out, force_terminal=False, width=200))
    row = {
        "id": "b1",
        "district_id": DISTRICT,
        "status": "running",
        "counts": {"users": {"read": 3, "published": 1}},
        "missing": {},
        "archived": {},
        "error": None,
    }
    with display:
        display.update(Progress(row, False, "running here", None))
        display.update(Progress(row, False, "running here", None))
        ended = row | {"status": "guarded", "missing": {"users": 2}}
        display.update(Progress(ended, False, "ended", None))
    lines = out.getvalue().splitlines()
    assert lines == [
        f"backfill b1 of district {DISTRICT}: running, running here",
        f"backfill b1 of district {DISTRICT}: guarded, ended",
    ]
    summary = display.summary(ended)
    assert "guarded" in summary and "missing users 2" in summary and "--force" in summary
    assert "re-announce" not in summary  # a row without a reason, or the operator's own
    assert "re-announce" not in display.summary(ended | {"reason": "cli"})
    followed = display.summary(ended | {"reason": "cursor_refused"})
    assert "poller's own (cursor_refused)" in followed and "run roster backfill again" in followed
    table = Console(file=io.StringIO(), width=200)
    table.print(display.render(Progress(row, True, "run by p1", None)))
