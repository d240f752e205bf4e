"""The alert rules in deploy/prometheus/: promtool checks them and runs their unit tests (through
scripts/promtool-check, which installs promtool where missing: this test fails, never skips,
when it cannot be had); every alert is tested firing and not firing, names only series the code
exports, and carries a severity, a summary, a description and a runbook link to a section of
docs/operations.md that exists."""

from __future__ import annotations

import re
from typing import Any

import yaml

from service.paths import project_root
from tests.support.promql import exported_series, metric_names, promtool_check

PROMETHEUS = project_root() / "deploy" / "prometheus"
SEVERITIES = {"critical", "warning", "info"}


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer (GitHub's rule) gives the headings of `markdown`."""
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    result = promtool_check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load((PROMETHEUS / "tests.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - firing == set(), "never tested firing"
    assert names - quiet == set(), "never tested quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_alert_reads_only_series_the_code_exports() -> None:
    exported = exported_series()
    for rule in _alerts():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section() -> None:
    runbook = anchors((project_root() / "docs" / "operations.md").read_text())
    names = [rule["alert"] for rule in _alerts()]
    assert len(names) == len(set(names)), "an alert name used twice"
    for rule in _alerts():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in runbook, f"docs/operations.md has no section #{anchor}"


def test_metric_names_reads_names_not_functions_labels_or_durations() -> None:
    expr = (
        'sum by (topic) (max by (topic, partition) (roster_consumer_lag{topic="a{b}"}))'
        " / on () group_left sum(rate(roster_x_total[$__rate_interval] offset 5m)) > 1e3"
        " unless absent(roster_y) and time() - roster_z > bool 0"
    )
    assert metric_names(expr) == {"roster_consumer_lag", "roster_x_total", "roster_y", "roster_z"}


def test_exported_series_knows_the_readme_s_metrics() -> None:
    exported = exported_series()
    for name in (
        "roster_http_requests_total",
        "roster_http_request_duration_seconds_bucket",
        "roster_alerts_open",  # built per scrape (service/health.py), not a Gauge
        "roster_consumer_lag",
        "roster_events_dead_lettered_total",
        "roster_outbox_backlog_age_seconds",
    ):
        assert name in exported, name
    assert "roster_no_such_metric" not in exported


def test_the_runbook_s_links_within_itself_lead_to_its_sections() -> None:
    text = (project_root() / "docs" / "operations.md").read_text()
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "the runbook links none of its sections"
    assert links - anchors(text) == set()
