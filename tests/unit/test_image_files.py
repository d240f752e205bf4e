"""The Dockerfile and compose.yaml name things that exist and keep their promises: the project's
Python, the lock file alone, a non-root user, `roster` as the entrypoint, every process with valid
settings. (scripts/image builds and runs the image for real: tests/integration/test_image.py.)"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import yaml
from typer.main import get_command

from service.cli import app as cli
from service.paths import project_root
from service.settings import Settings

ROOT = project_root()


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_base_is_an_argument_defaulting_to_the_projects_python() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    python = pyproject["tool"]["mypy"]["python_version"]  # the version the code is checked for
    assert pyproject["project"]["requires-python"] == f">={python}"
    args = [rest for word, rest in instructions() if word == "ARG" and rest.startswith("BASE=")]
    assert args == [f"BASE=python:{python}-slim-bookworm"]
    stages = [rest for word, rest in instructions() if word == "FROM"]
    assert stages == ["${BASE} AS build", "${BASE}"]  # multi-stage, both on the argument


def test_only_the_runtime_lock_is_installed() -> None:
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    copies = [rest for word, rest in instructions() if word == "COPY"]
    assert "-r requirements.lock" in runs
    assert "requirements-dev" not in dockerfile()
    assert "[dev]" not in dockerfile()
    copied = {rest.split()[0] for rest in copies if not rest.startswith("--from")}
    assert "devstack" not in copied and "tests" not in copied
    # The build context holds nothing the Dockerfile does not copy (.local/, .venv/ stay out).
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*"
    assert "!devstack" not in ignore and "!tests" not in ignore


def test_the_image_runs_roster_as_a_non_root_user_on_the_default_ports() -> None:
    found = instructions()
    assert ("ENTRYPOINT", '["roster"]') in found
    (user,) = [rest for word, rest in found if word == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can check it
    (exposed,) = [rest for word, rest in found if word == "EXPOSE"]
    settings = Settings()
    ports = {settings.http_port, settings.consumer_metrics_port, settings.relay_metrics_port}
    assert ports <= {int(port) for port in exposed.split()}


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document


def resolved(value: str) -> str:
    """A compose value with each ${NAME:-default} at its default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_runs_every_process_with_valid_settings() -> None:
    commands = set(get_command(cli).commands)  # type: ignore[attr-defined]
    services = compose()["services"]
    assert {"kafka", "postgres"} <= set(services)
    run = {}
    for name, service in services.items():
        if "command" not in service:
            continue
        (command,) = service["command"]
        assert command in commands, command
        run[command] = name
        environment = {key: resolved(str(value)) for key, value in service["environment"].items()}
        settings = Settings.model_validate(
            {
                key.removeprefix("ROSTER_").lower(): value
                for key, value in environment.items()
                if key.removeprefix("ROSTER_").lower() in Settings.model_fields
            }
        )
        assert settings.database_url and settings.kafka_bootstrap_servers
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["image"] == services["migrate"]["image"]  # one image for every process
    assert set(run) == {"migrate", "api", "consume", "relay", "poll"}
    # The processes start once the schema is at head and the broker answers.
    for command, name in run.items():
        if command != "migrate":
            depends = services[name]["depends_on"]
            assert depends["migrate"]["condition"] == "service_completed_successfully"
            assert depends["kafka"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
