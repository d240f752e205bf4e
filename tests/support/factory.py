"""Valid Clever events of every type, built from a seeded random source (tests and benchmarks)."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.clever import ACTIONS, RECORD_KINDS

BASE_TIME = datetime(2026, 9, 1, tzinfo=UTC)


class Factory:
    def __init__(self, seed: int | None = None) -> None:
        # Unseeded by default: tests share one topic and database, so ids must never repeat.
        self.rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8)))
        self.clock = BASE_TIME

    def oid(self) -> str:
        return f"{self.rng.getrandbits(96):024x}"

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.isoformat().replace("+00:00", "Z")

    def obj(self, kind: str, district: str) -> dict[str, Any]:
        stamp = self.tick()
        common: dict[str, Any] = {"id": self.oid(), "created": stamp, "last_modified": stamp}
        school = self.oid()
        if kind == "districts":
            return {
                **common,
                "id": district,
                "name": "Springfield USD",
                "state": "running",
                "sis_type": "sftp",
            }
        common["district"] = district
        if kind == "schools":
            return {
                **common,
                "name": "Lincoln Elementary",
                "sis_id": "S1",
                "low_grade": "1",
                "high_grade": "5",
                "location": {"city": "Springfield"},
            }
        if kind == "users":
            return {
                **common,
                "email": "pupil@example.org",
                "name": {"first": "Ada", "middle": "B", "last": "Lovelace"},
                "roles": {
                    "student": {
                        "sis_id": "123",
                        "grade": "4",
                        "dob": "1/2/2016",
                        "school": school,
                        "schools": [school],
                        "enrollments": [{"school": school}],
                    }
                },
            }
        if kind == "sections":
            return {
                **common,
                "school": school,
                "name": "Math 4",
                "subject": "math",
                "course": self.oid(),
                "term_id": self.oid(),
                "teacher": self.oid(),
                "teachers": [self.oid()],
                "students": [self.oid() for _ in range(3)],
            }
        if kind == "courses":
            return {**common, "name": "Math", "number": "M4"}
        if kind == "terms":
            return {**common, "name": "Fall", "start_date": "2026-09-01", "end_date": "2026-12-20"}
        if kind == "resources":
            return {**common, "resource_id": "r-1", "title": "MyPath Math", "roles": ["student"]}
        raise ValueError(kind)

    def event(
        self,
        event_type: str = "users.updated",
        district: str | None = None,
        obj: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        kind = event_type.partition(".")[0]
        district = district or self.oid()
        return {
            "id": self.oid(),
            "type": event_type,
            "created": self.tick(),
            "data": {"object": obj or self.obj(kind, district)},
        }

    def every_type(self, district: str | None = None) -> list[dict[str, Any]]:
        district = district or self.oid()
        return [
            self.event(f"{kind}.{action}", district) for kind in RECORD_KINDS for action in ACTIONS
        ]


def page(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Clever's list envelope around `events`."""
    return {
        "data": [{"data": event} for event in events],
        "links": [{"rel": "self", "uri": "/v3.0/events"}],
    }
