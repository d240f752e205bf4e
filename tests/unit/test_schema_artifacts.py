"""The committed schema documents are exactly what the models generate."""

from __future__ import annotations

import json

from schemas.artifacts import rendered
from service.paths import project_root


def test_committed_documents_match_the_models() -> None:
    root = project_root() / "schemas"
    expected = rendered()
    committed = {
        str(path.relative_to(root)): path.read_text()
        for path in [*root.glob("json/**/*.json"), root / "asyncapi.json"]
    }
    assert set(committed) == set(expected), "run `roster schemas` and commit the result"
    for path, content in expected.items():
        assert committed[path] == content, f"{path} is out of date: run `roster schemas`"


def test_asyncapi_describes_every_topic_and_its_references_resolve() -> None:
    doc = json.loads(rendered()["asyncapi.json"])
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {
        "clever.events.v1",
        "clever.events.dlq.v1",
        "roster.changes.v1",
        "roster.alerts.v1",
    }

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        target: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, ref
            target = target[part]
