"""`roster programs` and `roster assignments`, run as commands against the real database."""

from __future__ import annotations

import os
import subprocess
import sys

from service.paths import project_root
from tests.support.factory import Factory
from tests.support.services import Services


def roster(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | {
        "ROSTER_DATABASE_URL": services.database_url,
        "ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
    }
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_programs_and_assignments_commands(services: Services) -> None:
    listed = roster(services, "programs")
    assert listed.returncode == 0
    assert "mypath_math" in listed.stdout and "single-school" in listed.stdout

    school = Factory().oid()
    added = roster(services, "assignments", "add", "mypath_math", "school", school)
    assert added.returncode == 0 and added.stdout.startswith("created "), added.stderr
    assignment_id = added.stdout.split()[1]
    again = roster(services, "assignments", "add", "mypath_math", "school", school)
    assert again.stdout.startswith(f"exists {assignment_id}")
    assert assignment_id in roster(services, "assignments", "list").stdout

    unknown = roster(services, "assignments", "add", "nope", "school", school)
    assert unknown.returncode == 2 and "unknown program 'nope'" in unknown.stderr
    bad_scope = roster(services, "assignments", "add", "mypath_math", "planet", school)
    assert bad_scope.returncode == 2 and "unknown scope 'planet'" in bad_scope.stderr

    assert roster(services, "assignments", "remove", assignment_id).returncode == 0
    assert assignment_id not in roster(services, "assignments", "list").stdout
    assert roster(services, "assignments", "remove", assignment_id).returncode == 1
