"""What the roster must hold for each student once it has caught up with the simulator."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from devstack.simulator.district import SimDistrict


@dataclass(frozen=True)
class StudentTruth:
    """`schools`: roles.student.schools and the schools of live sections listing the student
    (live schools only); `sections`: the live sections listing them; both sorted. `deleted`: the
    student is out of the lists (deleted at the source or unshared)."""

    district_id: str
    schools: tuple[str, ...]
    sections: tuple[str, ...]
    deleted: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "district_id": self.district_id,
            "schools": list(self.schools),
            "sections": list(self.sections),
            "deleted": self.deleted,
        }


def student_truth(district: SimDistrict) -> dict[str, StudentTruth]:
    live_schools = set(district.kind("schools").ids())
    schools: defaultdict[str, set[str]] = defaultdict(set)
    sections: defaultdict[str, set[str]] = defaultdict(set)
    for section in district.kind("sections").records.values():
        section_id, school_id = section["id"], section["school"]
        live = school_id in live_schools
        for student_id in section.get("students", ()):
            sections[student_id].add(section_id)
            if live:
                schools[student_id].add(school_id)
    students: dict[str, tuple[dict[str, Any], bool]] = {
        user_id: (user, False)
        for user_id, user in district.kind("users").records.items()
        if "student" in user.get("roles", {})
    }
    for user_id, gone in district.gone.items():
        if gone.kind == "users" and "student" in gone.record.get("roles", {}):
            students[user_id] = (gone.record, True)
    truth = {}
    for user_id, (user, deleted) in students.items():
        listed = set(user["roles"]["student"].get("schools") or []) & live_schools
        truth[user_id] = StudentTruth(
            district.id,
            tuple(sorted(listed | schools.get(user_id, set()))),
            tuple(sorted(sections.get(user_id, ()))),
            deleted,
        )
    return truth
