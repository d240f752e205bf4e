"""Seeded districts: deterministic from (seed, district number) and sized by `Size`.

A district has schools by grade band (elementary K-5, middle 6-8, high 9-12), two terms, a course
per grade and subject, teachers with sections (some co-taught, some teachers also staff), students
in several sections of their school (a share of them also in a section of a second school, so
linked to two schools), contacts of students, and staff (some also district admins). Records are
built as plain dicts in one pass and loaded with one sort per list: 50,000 students take about a
second. Seeded records date from `epoch`; they have no events (shared before the feed's window).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from devstack.simulator.district import SimDistrict, stamp

GRADES = ("Kindergarten", *(str(g) for g in range(1, 13)))
SUBJECTS = ("math", "english/language arts", "science", "social studies", "arts and music", "PE")
FIRST = (
    "Ada",
    "Ben",
    "Cleo",
    "Dev",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivo",
    "Jun",
    "Kai",
    "Lena",
    "Milo",
    "Nia",
    "Omar",
    "Pia",
    "Quin",
    "Rosa",
    "Sami",
    "Tess",
    "Uma",
    "Vik",
    "Wren",
    "Yara",
)
LAST = (
    "Abara",
    "Berg",
    "Chen",
    "Diaz",
    "Eze",
    "Fox",
    "Garcia",
    "Holm",
    "Ito",
    "Jones",
    "Khan",
    "Lopez",
    "Moreau",
    "Novak",
    "Okafor",
    "Park",
    "Quist",
    "Rossi",
    "Silva",
    "Tran",
    "Ueda",
    "Vega",
    "Weber",
    "Young",
    "Zhou",
)


@dataclass(frozen=True)
class Size:
    """How big a seeded district is. Unset counts follow the others: teachers one per four
    sections (at least one per school), contacts one per ten students, staff two per school."""

    schools: int = 4
    students: int = 60
    sections: int = 12
    teachers: int | None = None
    contacts: int | None = None
    staff: int | None = None
    sections_per_student: int = 3
    two_school_share: float = 0.05  # of students also in one section of a second school (>= 1)

    def __post_init__(self) -> None:
        if self.schools < 1 or self.students < 0 or self.sections < self.schools:
            raise ValueError("a district needs a school, and a section per school at least")


def bands(schools: int) -> list[tuple[int, int]]:
    """(lowest, highest) grade index of each school: about 60% elementary, 20% middle, 20% high."""
    if schools == 1:
        return [(0, 12)]
    if schools == 2:
        return [(0, 8), (9, 12)]
    middle = max(1, round(schools * 0.2))
    high = max(1, round(schools * 0.2))
    elementary = max(1, schools - middle - high)
    middle = schools - elementary - high
    return [(0, 5)] * elementary + [(6, 8)] * middle + [(9, 12)] * high


def _spread(total: int, weights: list[int], rng: random.Random) -> list[int]:
    """`total` split in proportion to `weights`, at least one each."""
    count = len(weights)
    shares = [1] * count
    rest = total - count
    whole = sum(weights) or count
    for i, weight in enumerate(weights):
        shares[i] += rest * (weight or 1) // whole
    for _ in range(total - sum(shares)):
        shares[rng.randrange(count)] += 1
    return shares


def seed_district(district: SimDistrict, rng: random.Random, size: Size, epoch: datetime) -> None:
    """Fills an empty district (its id, name and token already chosen)."""

    def oid() -> str:
        return f"{rng.getrandbits(96):024x}"

    at = stamp(epoch)
    did = district.id
    base: dict[str, Any] = {"district": did, "created": at, "last_modified": at}

    def person() -> dict[str, str]:
        return {
            "first": rng.choice(FIRST),
            "middle": rng.choice(FIRST)[0],
            "last": rng.choice(LAST),
        }

    district.kind("districts").load(
        [
            {
                "id": did,
                "name": district.name,
                "state": "running",
                "sis_type": "sftp",
                "created": at,
                "last_modified": at,
            }
        ]
    )
    year = epoch.year if epoch.month >= 8 else epoch.year - 1
    terms = [
        {
            **base,
            "id": oid(),
            "name": f"Fall {year}",
            "start_date": f"{year}-08-20",
            "end_date": f"{year}-12-20",
        },
        {
            **base,
            "id": oid(),
            "name": f"Spring {year + 1}",
            "start_date": f"{year + 1}-01-06",
            "end_date": f"{year + 1}-06-10",
        },
    ]
    courses: dict[tuple[int, str], dict[str, Any]] = {}
    for grade in range(len(GRADES)):
        for number, subject in enumerate(SUBJECTS):
            courses[grade, subject] = {
                **base,
                "id": oid(),
                "name": f"{subject} {GRADES[grade]}",
                "number": f"C{grade:02d}{number}",
            }
    schools: list[dict[str, Any]] = []
    for number, (low, high) in enumerate(bands(size.schools)):
        kind = "Elementary" if high <= 5 else "Middle" if low >= 6 and high <= 8 else "High"
        schools.append(
            {
                **base,
                "id": oid(),
                "name": f"{rng.choice(LAST)} {kind} School {number}",
                "sis_id": f"S{number}",
                "school_number": f"{100 + number}",
                "nces_id": f"{rng.getrandbits(40):012d}"[:12],
                "low_grade": GRADES[low],
                "high_grade": GRADES[high],
                "location": {
                    "address": f"{number} Main St",
                    "city": "Springfield",
                    "state": "CA",
                    "zip": "90000",
                },
                "principal": {
                    "name": " ".join(person()[k] for k in ("first", "last")),
                    "email": f"principal{number}@schools.example.org",
                },
            }
        )
    grade_schools: dict[int, list[int]] = {g: [] for g in range(len(GRADES))}
    for index, (low, high) in enumerate(bands(size.schools)):
        for grade in range(low, high + 1):
            grade_schools[grade].append(index)

    # Students first (their schools decide how sections are spread).
    students: list[dict[str, Any]] = []
    homes: list[int] = []
    per_school = [0] * size.schools
    for number in range(size.students):
        grade = rng.randrange(len(GRADES))
        home = rng.choice(grade_schools[grade])
        per_school[home] += 1
        homes.append(home)
        name = person()
        school_id = schools[home]["id"]
        students.append(
            {
                **base,
                "id": oid(),
                "email": f"{name['first']}.{name['last']}{number}@students.example.org".lower(),
                "name": name,
                "roles": {
                    "student": {
                        "sis_id": f"{100000 + number}",
                        "student_number": f"{200000 + number}",
                        "state_id": f"{300000 + number}",
                        "grade": GRADES[grade],
                        "dob": f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/{year - 5 - grade}",
                        "school": school_id,
                        "schools": [school_id],
                        "enrollments": [
                            {"school": school_id, "start_date": terms[0]["start_date"]}
                        ],
                    }
                },
            }
        )

    section_counts = _spread(size.sections, per_school, rng)
    teacher_total = size.teachers or max(size.schools, math.ceil(size.sections / 4))
    teacher_counts = _spread(max(teacher_total, size.schools), section_counts, rng)
    teachers: list[dict[str, Any]] = []
    sections: list[dict[str, Any]] = []
    school_sections: list[list[dict[str, Any]]] = []
    for index, school in enumerate(schools):
        low, high = bands(size.schools)[index]
        mine = []
        for t in range(teacher_counts[index]):
            name = person()
            roles: dict[str, Any] = {
                "teacher": {
                    "sis_id": f"T{index}-{t}",
                    "school": school["id"],
                    "schools": [school["id"]],
                    "title": "Teacher",
                }
            }
            if rng.random() < 0.1:  # a teacher who is staff too
                roles["staff"] = {"schools": [school["id"]], "department": "Counseling"}
            mine.append(
                {
                    **base,
                    "id": oid(),
                    "name": name,
                    "roles": roles,
                    "email": f"{name['first'].lower()}.t{index}-{t}@schools.example.org",
                }
            )
        teachers.extend(mine)
        listed = []
        for s in range(section_counts[index]):
            grade = rng.randint(low, high)
            subject = rng.choice(SUBJECTS)
            teacher = mine[s % len(mine)]["id"]
            co = [rng.choice(mine)["id"]] if rng.random() < 0.1 and len(mine) > 1 else []
            listed.append(
                {
                    **base,
                    "id": oid(),
                    "school": school["id"],
                    "name": f"{subject} {GRADES[grade]} ({s})",
                    "sis_id": f"X{index}-{s}",
                    "subject": subject,
                    "grade": GRADES[grade],
                    "period": str(s % 7 + 1),
                    "course": courses[grade, subject]["id"],
                    "term_id": terms[s % 2]["id"],
                    "teacher": teacher,
                    "teachers": sorted({teacher, *co}),
                    "students": [],
                }
            )
        sections.extend(listed)
        school_sections.append(listed)

    # Exactly round(share * students) in two schools, at least one when the share is not zero:
    # a small district drawn student by student could have none (tests rely on some).
    two_schools: set[int] = set()
    if size.schools > 1 and size.two_school_share > 0 and students:
        wanted = max(1, round(size.two_school_share * len(students)))
        two_schools = set(rng.sample(range(len(students)), min(wanted, len(students))))
    for number, (student, home) in enumerate(zip(students, homes, strict=True)):
        available = school_sections[home]
        for section in rng.sample(available, min(size.sections_per_student, len(available))):
            section["students"].append(student["id"])
        if number in two_schools:
            other = rng.choice([i for i in range(size.schools) if i != home])
            rng.choice(school_sections[other])["students"].append(student["id"])
            role = student["roles"]["student"]
            role["schools"] = [role["school"], schools[other]["id"]]
            role["enrollments"].append(
                {"school": schools[other]["id"], "start_date": terms[0]["start_date"]}
            )

    contacts = []
    for number in range(size.contacts if size.contacts is not None else size.students // 10):
        if not students:
            break
        kids = rng.sample(students, min(len(students), 1 if rng.random() < 0.8 else 2))
        name = person()
        contacts.append(
            {
                **base,
                "id": oid(),
                "name": name,
                "email": f"{name['last'].lower()}.family{number}@mail.example.org",
                "roles": {
                    "contact": {
                        "student_relationships": [
                            {
                                "student": kid["id"],
                                "relationship": "Parent",
                                "type": "Parent/Guardian",
                            }
                            for kid in kids
                        ]
                    }
                },
            }
        )
    staff = []
    for number in range(size.staff if size.staff is not None else 2 * size.schools):
        name = person()
        roles = {"staff": {"schools": [rng.choice(schools)["id"]], "department": "Office"}}
        if number == 0 or rng.random() < 0.2:  # a district admin who is staff too
            roles["district_admin"] = {}
        staff.append(
            {
                **base,
                "id": oid(),
                "name": name,
                "roles": roles,
                "email": f"staff{number}@district.example.org",
            }
        )

    district.kind("terms").load(terms)
    district.kind("courses").load(list(courses.values()))
    district.kind("schools").load(schools)
    district.kind("sections").load(sections)
    district.kind("users").load(students + teachers + contacts + staff)


def default_epoch(now: datetime) -> datetime:
    """Seeded records date from 40 days before the simulator's start (past the events window),
    at midnight: newer changes always win over them."""
    return (now - timedelta(days=40)).replace(hour=0, minute=0, second=0, microsecond=0)
