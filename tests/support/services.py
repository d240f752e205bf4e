"""The real broker and database for a test session: the project's own, or the ones configured.

`ROSTER_KAFKA_BOOTSTRAP_SERVERS` / `ROSTER_DATABASE_URL` point the suite at existing services (a
fresh database is created on the given server and dropped afterwards); otherwise a local broker and
an embedded PostgreSQL are started under `.local/test-<pid>/` and removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from devstack.kafka import LocalKafka, free_port
from devstack.postgres import LocalPostgres
from devstack.process import ManagedProcess
from service.db.engine import normalise_url
from service.paths import project_root


@dataclass
class Services:
    kafka_bootstrap: str
    database_url: str
    home: Path
    kafka: ManagedProcess | None = None
    local_kafka: LocalKafka | None = None


async def _admin(url: str, sql: str) -> None:
    parsed = make_url(normalise_url(url))
    host = parsed.query.get("host")
    conn = await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
        host=host if isinstance(host, str) else parsed.host,
        port=parsed.port,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server_url: str, name: str) -> str:
    """Creates database `name` on the server of `server_url`; returns its URL."""
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    return (
        make_url(normalise_url(server_url)).set(database=name).render_as_string(hide_password=False)
    )


def drop_database(server_url: str, name: str) -> None:
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def session_services() -> Iterator[Services]:
    home = project_root() / ".local" / f"test-{os.getpid()}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    started: list[ManagedProcess] = []
    created_db: tuple[str, str] | None = None
    try:
        configured_db = os.environ.get("ROSTER_DATABASE_URL")
        if configured_db:
            name = f"roster_test_{secrets.token_hex(4)}"
            database_url = create_database(configured_db, name)
            created_db = (configured_db, name)
        else:
            postgres = LocalPostgres(home)
            started.append(postgres.start())
            database_url = postgres.url()
        configured_kafka = os.environ.get("ROSTER_KAFKA_BOOTSTRAP_SERVERS")
        kafka_proc: ManagedProcess | None = None
        local_kafka: LocalKafka | None = None
        if configured_kafka:
            bootstrap = configured_kafka
        else:
            port = free_port(consecutive=2)
            local_kafka = LocalKafka(home, port, controller_port=port + 1)
            kafka_proc = local_kafka.start()
            started.append(kafka_proc)
            bootstrap = local_kafka.bootstrap_servers
        running = Services(bootstrap, database_url, home, kafka_proc, local_kafka)
        yield running
    finally:
        if "running" in locals() and running.kafka is not None:
            running.kafka.stop()  # a test may have restarted the broker
        for proc in reversed(started):
            proc.stop()
        if created_db is not None:
            drop_database(*created_db)
        shutil.rmtree(home, ignore_errors=True)


def stop_kafka(services: Services) -> None:
    assert services.kafka is not None
    services.kafka.stop()


def start_kafka(services: Services) -> None:
    assert services.local_kafka is not None
    services.kafka = services.local_kafka.start()
