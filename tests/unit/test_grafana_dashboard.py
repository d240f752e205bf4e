"""deploy/grafana/roster-sync.json: valid JSON, every query on the chosen data source (a
datasource variable), reading only series the code exports, valid PromQL (promtool checks each
query as a recording rule), and every alert's signal on it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from service.paths import project_root
from tests.support.promql import exported_series, metric_names, promtool_check

DASHBOARD = project_root() / "deploy" / "grafana" / "roster-sync.json"
DATASOURCE = "${datasource}"
# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$district": ".*"}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels() -> list[dict[str, Any]]:
    panels = []
    for panel in _dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return [p for p in panels if p["type"] != "row"]


def _queries() -> list[str]:
    return [target["expr"] for panel in _panels() for target in panel["targets"]]


def test_the_dashboard_picks_its_prometheus_with_a_datasource_variable() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels():
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE, variable["name"]


def test_every_query_reads_only_series_the_code_exports() -> None:
    exported = exported_series()
    for expr in _queries():
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert found, variable["definition"]
            assert found.group(1) in exported, variable["name"]


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_alert_s_signal_is_on_the_dashboard() -> None:
    groups = yaml.safe_load((project_root() / "deploy/prometheus/rules.yml").read_text())
    shown = set().union(*(metric_names(e) for e in _queries()))
    for group in groups["groups"]:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]) <= shown, rule["alert"]


def test_panels_have_unique_ids_and_fit_the_grid_without_overlap() -> None:
    ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in _dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
