"""The Dockerfile and Kubernetes manifests name things that exist (they cannot be run here: no
container engine on this machine)."""

from __future__ import annotations

from typing import Any

import yaml
from typer.main import get_command

from service.app import create_app
from service.cli import app as cli
from service.paths import project_root
from service.settings import Settings


def _documents() -> list[dict[str, Any]]:
    text = (project_root() / "k8s" / "roster-sync.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_every_container_runs_a_real_subcommand_with_real_ports_and_probes() -> None:
    commands = set(get_command(cli).commands)  # type: ignore[attr-defined]
    settings = Settings(admin_token="x" * 16)
    ports = {
        "api": settings.http_port,
        "consume": settings.consumer_metrics_port,
        "relay": settings.relay_metrics_port,
    }
    paths = set(create_app(settings).openapi()["paths"])
    seen = set()
    for doc in _documents():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            command = container["args"][0]
            assert command in commands, command
            seen.add(command)
            for port in container.get("ports", []):
                assert port["containerPort"] == ports[command]
            for probe in ("livenessProbe", "readinessProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["path"] in paths
    assert seen == {"api", "consume", "relay", "migrate"}


def test_dockerfile_exposes_the_default_ports_and_runs_roster() -> None:
    dockerfile = (project_root() / "Dockerfile").read_text()
    settings = Settings()
    for port in (settings.http_port, settings.consumer_metrics_port, settings.relay_metrics_port):
        assert str(port) in dockerfile
    assert 'ENTRYPOINT ["roster"]' in dockerfile
