"""Where the checkout is: its migrations, its schemas, and the dev stack's `.local/`."""

from __future__ import annotations

from pathlib import Path


def project_root() -> Path:
    """The checkout this package runs from (the folder holding pyproject.toml), else the cwd."""
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "service").is_dir():
            return candidate
    return Path.cwd()
