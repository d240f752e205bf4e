"""The import rule of docs/architecture.md, checked on the source: every layer imports only the
layers below it (or its own), no import points up, and no two modules import each other in a
circle. Imports inside functions count too (a lazy import is still a dependency), except the
dev package, which only `roster dev` loads lazily."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

from service.paths import project_root

# Lowest first. A module belongs to the first entry its dotted name starts with (the longest
# prefix wins); entries on one line are one layer and do not import each other's internals.
LAYERS: list[tuple[str, ...]] = [
    ("schemas",),
    (
        "service.settings",
        "service.paths",
        "service.iso",
        "service.logs",
        "service.gc_tuning",
        "service.failpoints",
        "service.retry",
        "service.recent",
        "service.tracing",
    ),
    ("service.reach",),
    ("service.db", "service.kafka", "service.metrics", "service.clever"),
    ("service.deps",),
    ("service.auth",),
    ("service.events", "service.outbox"),
    ("service.roster",),
    ("service.programs",),
    ("service.sync", "service.students", "service.webhooks"),
    # The pull doors publish through the webhook door's ingest, so they sit just above it.
    ("service.pull",),
    # Processes and their wiring: each may import any layer below, none imports another.
    ("service.health", "service.worker"),
    ("service.app", "consumers", "service.outbox.main", "service.pull.main"),
    ("service.cli",),
    ("service.__main__",),
    ("devstack",),
]
PACKAGES = ("schemas", "service", "consumers", "devstack")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    root = project_root()
    return {
        _module_name(path, root): path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }


def _imports(path: Path, module: str) -> Iterator[tuple[str, int]]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from service import failpoints` imports a module
                yield f"{target}.{alias.name}", node.lineno


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), index)
    return None if best is None else best[1]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in _imports(path, name):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def test_every_module_has_a_layer() -> None:
    # `service` itself (its __init__) holds nothing: not a layer.
    assert [m for m in _modules() if _layer(m) is None and m != "service"] == []


def test_no_import_points_up_or_across_a_layer() -> None:
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        mine = _layer(name)
        for target, line in _imports(path, name):
            if target not in modules or target.split(".")[0] not in PACKAGES:
                continue
            theirs = _layer(target)
            if mine is None or theirs is None or theirs < mine:
                continue
            same_unit = _unit(name) == _unit(target)
            if theirs == mine and same_unit:
                continue  # within one package of a layer
            if name.startswith("service.cli") and target.startswith("devstack"):
                continue  # `roster dev` loads the dev package lazily
            if name == "service" or target == "service":
                continue  # the package itself holds nothing
            wrong.append(f"{path.relative_to(project_root())}:{line} {name} -> {target}")
    assert wrong == []


def _unit(module: str) -> str:
    """The package a module belongs to within its layer (its longest layer prefix)."""
    best = ""
    for layer in LAYERS:
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best = prefix
    return best


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package's __init__ and its own modules importing each other is no circle of features.
    real = [
        c
        for c in circles
        if not any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in itertools.pairwise(c))
    ]
    assert real == []


def test_the_rule_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import of a higher layer is found."""
    module = tmp_path / "x.py"
    module.write_text("from service.programs import rules\nimport service.app\n")
    targets = [t for t, _ in _imports(module, "service.roster.x")]
    assert "service.programs.rules" in targets and "service.app" in targets
    assert _layer("service.roster.x") < _layer("service.programs.rules")  # type: ignore[operator]
