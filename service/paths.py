"""Where the project keeps its local state (`.local/`: broker jars and data, database files)."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout this package runs from (the folder holding pyproject.toml), else the cwd."""
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "service").is_dir():
            return candidate
    return Path.cwd()


def local_home() -> Path:
    """`ROSTER_HOME`, or `.local/` in the checkout: ignored by git, survives restarts."""
    configured = os.environ.get("ROSTER_HOME")
    return Path(configured).resolve() if configured else project_root() / ".local"
