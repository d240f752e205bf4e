"""Assignment changes re-check their whole scope in bulk: a school of 5,000 students.

    .venv/bin/python -m bench.assignments [--students 5000]

Builds the roster with the real consumer handler (half the students also sit in sections at a
second school), then times assigning a single-school program to the school (opening an alert for
each student in two schools) and removing it (resolving them). Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from sqlalchemy import text

from consumers.roster import RosterApplier
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.db.uow import UnitOfWork
from service.programs import assignments
from tests.support.factory import Factory
from tests.support.pipeline import NoDeadLetters, as_records
from tests.support.services import session_services


def _roster(factory: Factory, students: int) -> tuple[str, list[dict[str, Any]]]:
    district = factory.oid()
    school_a, school_b = factory.obj("schools", district), factory.obj("schools", district)
    events = [factory.event("schools.created", district, s) for s in (school_a, school_b)]
    ids = []
    for _ in range(students):
        user = factory.obj("users", district)
        user["roles"]["student"].update(school=school_a["id"], schools=[school_a["id"]])
        ids.append(user["id"])
        events.append(factory.event("users.created", district, user))
    for start in range(0, students // 2, 25):
        section = factory.obj("sections", district)
        section.update(school=school_b["id"], students=ids[start : start + 25])
        events.append(factory.event("sections.created", district, section))
    return school_a["id"], events


async def run(url: str, students: int) -> None:
    engine = make_engine(url, pool_size=2)
    try:
        school, events = _roster(Factory(seed=5), students)
        for start in range(0, len(events), 2000):
            async with UnitOfWork(engine) as uow:
                await RosterApplier(NoDeadLetters()).handle(
                    uow, as_records(events[start : start + 2000])
                )
                await uow.commit()
        for label, work in (
            ("assign mypath_math to the school", "add"),
            ("remove the assignment", "remove"),
        ):
            started = time.perf_counter()
            async with UnitOfWork(engine) as uow:
                if work == "add":
                    result = await assignments.add_assignment(
                        uow.connection, "mypath_math", "school", school
                    )
                    assignment_id, changes = result.assignment["id"], len(result.decisions)
                else:
                    steps = await assignments.remove_assignment(uow.connection, assignment_id)
                    changes = len(steps or [])
                await uow.commit()
            elapsed = time.perf_counter() - started
            print(
                f"{label:<34} {students:,} students re-checked, {changes:,} alerts changed: "
                f"{elapsed:.2f} s",
                flush=True,
            )
        async with engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM alerts"))
        print(f"alerts stored: {count:,}")
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=5000)
    args = parser.parse_args()
    with session_services() as services:
        upgrade(services.database_url)
        asyncio.run(run(services.database_url, args.students))


if __name__ == "__main__":
    main()
