"""The README's reference subscriber, run as written against the real broker."""

from __future__ import annotations

import asyncio
import os
import re
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.roster import RosterApplier
from service.db.uow import UnitOfWork
from service.kafka.limits import MAX_RECORD_BYTES
from service.paths import project_root
from tests.support.factory import Factory
from tests.support.pipeline import NoDeadLetters, as_records, running_relay
from tests.support.services import Services


def readme_subscriber() -> str:
    readme = (project_root() / "README.md").read_text()
    found = re.search(r"<!-- reference-subscriber -->\n```python\n(.*?)```", readme, re.S)
    assert found, "the README's reference subscriber is missing"
    return found.group(1)


async def test_the_readme_subscriber_prints_committed_changes(
    services: Services, engine: AsyncEngine
) -> None:
    code = readme_subscriber()
    assert len(code.strip().splitlines()) <= 25
    factory = Factory()
    district = factory.oid()
    event = factory.event("users.created", district)
    student = event["data"]["object"]["id"]
    async with running_relay(services, engine):
        async with UnitOfWork(engine) as uow:
            await RosterApplier(NoDeadLetters()).handle(uow, as_records([event]))
            await uow.commit()

        env = dict(os.environ) | {"ROSTER_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            # A line per message: the topic may hold a section of tens of thousands of students
            # (test_large_events), one line of megabytes.
            limit=MAX_RECORD_BYTES * 2,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                while True:
                    line = (await proc.stdout.readline()).decode()
                    assert line, "the subscriber exited"
                    if f" {student} " in line:
                        break
        finally:
            proc.terminate()
            await proc.wait()
    assert line.startswith("roster.student.upserted ")
    assert f'"source_event_id":"{event["id"]}"' in line.replace(" ", "")
