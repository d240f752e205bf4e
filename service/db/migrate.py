"""Runs the Alembic revisions (the `roster migrate` command); never done implicitly at start-up."""

from __future__ import annotations

import functools
from collections.abc import Collection

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.paths import project_root


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(project_root() / "alembic.ini"))
    if url is not None:
        # The config is an INI file underneath: '%' (URL escapes) must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


@functools.cache
def code_revisions() -> tuple[frozenset[str], frozenset[str]]:
    """The head revision(s) of the migrations shipped with this code, and every revision it
    knows (read once per process)."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return (
        frozenset(scripts.get_heads()),
        frozenset(script.revision for script in scripts.walk_revisions()),
    )


def schema_problem(
    applied: Collection[str] | None, heads: Collection[str], known: Collection[str]
) -> str | None:
    """Why a database whose `alembic_version` holds `applied` (None: no such table) is behind
    the code's migration `heads`, in a sentence; None when it is at them or ahead (pure). A
    revision the code does not know was applied by newer code: during a rolling deploy the
    migrate Job runs before the new pods start, and the old pods must keep serving (migrations
    are written to be compatible with the code before them), so ahead is ready."""
    if not applied:
        return "no migrations applied (run `roster migrate`)"
    if set(applied) == set(heads):
        return None
    if not set(applied) <= set(known):
        return None  # migrated by newer code
    at = f"at revision {', '.join(sorted(applied))}, the code's head is {', '.join(sorted(heads))}"
    return f"{at} (run `roster migrate`)"


async def applied_revisions(engine: AsyncEngine) -> list[str] | None:
    """The revisions the database's `alembic_version` holds (None: no such table)."""
    async with engine.connect() as connection:
        if not await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
            return None
        rows = await connection.scalars(text("SELECT version_num FROM alembic_version"))
        return list(rows.all())


async def schema_behind(engine: AsyncEngine) -> str | None:
    """Why the database's schema is behind this code's migrations (see `schema_problem`), or
    None when it is at their head or ahead."""
    return schema_problem(await applied_revisions(engine), *code_revisions())
