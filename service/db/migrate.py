"""Runs the Alembic revisions (the `roster migrate` command); never done implicitly at start-up."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from service.paths import project_root


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(project_root() / "alembic.ini"))
    if url is not None:
        # The config is an INI file underneath: '%' (URL escapes) must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
