"""The image, built and run for real: scripts/image (podman, a debootstrap base, the local broker
and database, compose.yaml). Where it cannot run here it exits non-zero saying why, so this test
fails rather than skips."""

from __future__ import annotations

import subprocess

from typer.main import get_command

from service.cli import app as cli
from service.paths import project_root


def test_the_image_runs_every_process_and_applies_a_signed_event() -> None:
    done = subprocess.run(
        [str(project_root() / "scripts" / "image")],
        cwd=project_root(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    lines = output.splitlines()
    (smoke,) = [line for line in lines if "SMOKE PASSED" in line]
    assert "migrate, api, consume, relay" in smoke
    # Once this checkout has the poller, the image must run it too.
    if "poll" in get_command(cli).commands:  # type: ignore[attr-defined]
        assert ", poll ran from the image" in smoke, smoke
    else:
        assert any("POLLER NOT RUN" in line for line in lines)
    assert any("-> applied" in line for line in lines)
    assert any("relay published the student's roster change" in line for line in lines)
    assert any("COMPOSE PASSED" in line for line in lines), output[-6000:]
    assert any("passed; everything it started is stopped and removed" in line for line in lines)
