"""Changes at the source, as Clever would show them: each writes the record (or takes it out of
the lists) AND its event, in one step, through the district's Emitter. Targets left unset are
drawn from the district's own random source (deterministic for a seed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devstack.simulator.district import Emitter, SimDistrict, snapshot, stamp
from devstack.simulator.seed import FIRST, GRADES, LAST


@dataclass
class Change:
    """What one change did: its name, the record it is about, the events it wrote (in order)."""

    what: str
    record_id: str
    event_ids: list[str] = field(default_factory=list)


class Changes:
    def __init__(self, district: SimDistrict, emitter: Emitter) -> None:
        self.d = district
        self.emit = emitter
        self.rng = district.rng

    # --- reads ---------------------------------------------------------------------------
    def students(self) -> list[str]:
        """Live student ids, sorted (the simulator's own list: do not change it)."""
        return self.d.kind("users").ids("student")

    def sections_of_school(self, school_id: str) -> list[dict[str, Any]]:
        return [s for s in self.d.kind("sections").records.values() if s["school"] == school_id]

    def _student(self, student_id: str | None) -> dict[str, Any]:
        ids = self.students()
        if student_id is None:
            if not ids:
                raise LookupError(f"district {self.d.id} has no student to change")
            student_id = self.rng.choice(ids)
        record = self.d.kind("users").get(student_id)
        if record is None or "student" not in record.get("roles", {}):
            raise LookupError(f"no live student {student_id} in district {self.d.id}")
        return record

    # --- changes -------------------------------------------------------------------------
    def new_student(self, school_id: str | None = None, sections: int = 3) -> Change:
        """A student enrolled in a school (random) and `sections` of its sections."""
        schools = self.d.kind("schools")
        school = (
            schools.get(school_id) if school_id else schools.get(self.rng.choice(schools.ids()))
        )
        if school is None:
            raise LookupError(f"no live school {school_id} in district {self.d.id}")
        low = GRADES.index(school["low_grade"])
        high = GRADES.index(school["high_grade"])
        grade = GRADES[self.rng.randint(low, high)]
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        number = len(self.d.kind("users")) + len(self.d.gone)
        today = stamp(self.emit.clock.now())[:10]
        record: dict[str, Any] = {
            "id": f"{self.rng.getrandbits(96):024x}",
            "district": self.d.id,
            "email": f"{first}.{last}.new{number}@students.example.org".lower(),
            "name": {"first": first, "middle": None, "last": last},
            "roles": {
                "student": {
                    "sis_id": f"N{number}",
                    "grade": grade,
                    "school": school["id"],
                    "schools": [school["id"]],
                    "enrollments": [{"school": school["id"], "start_date": today}],
                }
            },
        }
        change = Change("new_student", record["id"])
        change.event_ids.append(self.emit.created(self.d, "users", record).id)
        self._join(change, record["id"], school["id"], sections)
        return change

    def move_student(self, student_id: str | None = None, to_school: str | None = None) -> Change:
        """Mid-year move: the student leaves the sections of their primary school for sections of
        another (one teaching their grade when there is one) and their school changes."""
        record = self._student(student_id)
        role = record["roles"]["student"]
        old = role.get("school")
        if to_school is None:
            others = [s for s in self.d.kind("schools").ids() if s != old]
            if not others:
                raise LookupError(f"district {self.d.id} has one school: nowhere to move to")
            fitting = [s for s in others if self._teaches(s, role.get("grade"))]
            to_school = self.rng.choice(fitting or others)
        change = Change("move_student", record["id"])
        for section in self.sections_of_school(old) if old else []:
            if record["id"] in section["students"]:
                self._roster(change, section, remove=record["id"])
        before = snapshot(record)
        today = stamp(self.emit.clock.now())[:10]
        role["school"] = to_school
        role["schools"] = [
            to_school,
            *(s for s in role.get("schools", []) if s not in (old, to_school)),
        ]
        enrollments = role.setdefault("enrollments", [])
        for enrollment in enrollments:
            if enrollment.get("school") == old and not enrollment.get("end_date"):
                enrollment["end_date"] = today
        enrollments.append({"school": to_school, "start_date": today})
        change.event_ids.append(self.emit.updated(self.d, "users", record, before).id)
        self._join(change, record["id"], to_school, 3)
        return change

    def change_section_roster(
        self, section_id: str | None = None, add: int = 1, remove: int = 1
    ) -> Change:
        """Adds `add` students of the section's school and removes `remove` of its students."""
        sections = self.d.kind("sections")
        section = sections.get(section_id or self.rng.choice(sections.ids()))
        if section is None:
            raise LookupError(f"no live section {section_id} in district {self.d.id}")
        before = snapshot(section)
        present = set(section["students"])
        leaving = self.rng.sample(sorted(present), min(remove, len(present)))
        joining = self._draw_students(section["school"], add, present)
        section["students"] = [s for s in section["students"] if s not in leaving] + joining
        change = Change("change_section_roster", section["id"])
        change.event_ids.append(self.emit.updated(self.d, "sections", section, before).id)
        return change

    def update_student(self, student_id: str | None = None) -> Change:
        """A grade or name change."""
        record = self._student(student_id)
        before = snapshot(record)
        if self.rng.random() < 0.5:
            record["name"] = {**record["name"], "last": self.rng.choice(LAST)}
        else:
            role = record["roles"]["student"]
            role["grade"] = GRADES[min(12, GRADES.index(role.get("grade", "1")) + 1)]
        change = Change("update_student", record["id"])
        change.event_ids.append(self.emit.updated(self.d, "users", record, before).id)
        return change

    def delete_student(self, student_id: str | None = None) -> Change:
        """Deleted at the source: out of their sections first, then `users.deleted`."""
        record = self._student(student_id)
        change = Change("delete_student", record["id"])
        for section in list(self.d.kind("sections").records.values()):
            if record["id"] in section["students"]:
                self._roster(change, section, remove=record["id"])
        change.event_ids.append(self.emit.deleted(self.d, "users", record["id"], unshared=False).id)
        return change

    def unshare(self, record_id: str | None = None) -> Change:
        """The district stops sharing a record (a random student unless given): it leaves the
        lists, `<kind>.deleted` carries it as it last was; nothing else changes."""
        if record_id is None:
            record_id = self._student(None)["id"]
        found = self.d.find(record_id)
        if found is None:
            raise LookupError(f"no live record {record_id} in district {self.d.id}")
        change = Change("unshare", record_id)
        change.event_ids.append(self.emit.deleted(self.d, found[0], record_id, unshared=True).id)
        return change

    def reshare(self, record_id: str | None = None) -> Change:
        """Shared again: back in the lists, `<kind>.created` with its last_modified unchanged."""
        if record_id is None:
            unshared = sorted(i for i, g in self.d.gone.items() if g.unshared)
            if not unshared:
                raise LookupError(f"district {self.d.id} has no unshared record")
            record_id = self.rng.choice(unshared)
        gone = self.d.gone.get(record_id)
        if gone is None or not gone.unshared:
            raise LookupError(f"record {record_id} is not unshared in district {self.d.id}")
        change = Change("reshare", record_id)
        change.event_ids.append(self.emit.reshared(self.d, record_id).id)
        return change

    def a_day_of_changes(self, n: int) -> list[Change]:
        """`n` changes of every kind above, in the proportions of a school day."""
        done: list[Change] = []
        for _ in range(n):
            roll = self.rng.random()
            if roll < 0.40:
                done.append(self.change_section_roster())
            elif roll < 0.60:
                done.append(self.update_student())
            elif roll < 0.75:
                done.append(self.new_student())
            elif roll < 0.85 and len(self.d.kind("schools")) > 1:
                done.append(self.move_student())
            elif roll < 0.90:
                done.append(self.delete_student())
            elif roll < 0.95 or not any(g.unshared for g in self.d.gone.values()):
                done.append(self.unshare())
            else:
                done.append(self.reshare())
        return done

    # --- helpers -------------------------------------------------------------------------
    def _draw_students(self, school_id: str, count: int, exclude: set[str]) -> list[str]:
        """Up to `count` random students of a school: drawn from all students until enough fit
        (a scan of 50,000 students per change would make a day of changes take minutes)."""
        users = self.d.kind("users")
        ids = users.ids("student")
        picked: list[str] = []
        for _ in range(200 * count if ids else 0):
            if len(picked) == count:
                break
            student_id = ids[self.rng.randrange(len(ids))]
            schools = users.records[student_id]["roles"]["student"].get("schools") or []
            if student_id not in exclude and student_id not in picked and school_id in schools:
                picked.append(student_id)
        return picked

    def _teaches(self, school_id: str, grade: str | None) -> bool:
        school = self.d.kind("schools").get(school_id)
        if school is None or grade not in GRADES:
            return False
        return (
            GRADES.index(school["low_grade"])
            <= GRADES.index(grade)
            <= GRADES.index(school["high_grade"])
        )

    def _join(self, change: Change, student_id: str, school_id: str, count: int) -> None:
        available = self.sections_of_school(school_id)
        available.sort(key=lambda s: s["id"])  # a deterministic draw
        for section in self.rng.sample(available, min(count, len(available))):
            self._roster(change, section, add=student_id)

    def _roster(
        self,
        change: Change,
        section: dict[str, Any],
        *,
        add: str | None = None,
        remove: str | None = None,
    ) -> None:
        before = snapshot(section)
        students = [s for s in section["students"] if s != remove]
        if add is not None and add not in students:
            students.append(add)
        section["students"] = students
        change.event_ids.append(self.emit.updated(self.d, "sections", section, before).id)
