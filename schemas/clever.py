"""Clever v3 events and the objects they carry, as the webhook door and the poller receive them.

Wire contracts only. Fields Clever may add later are kept (`extra="allow"`), never rejected; what
the pipeline relies on (ids, the event type, the object, the district an object belongs to) is
required and typed, so a malformed event is refused at the door with the field named.

Times: Clever writes every time in UTC. A time without a zone (`2026-11-29T10:00:00`) is read as
UTC, and a date alone (`2026-11-29`) as its midnight UTC, so every time a model holds is aware.
The door and the consumer validate with these same models, so they read such a time alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

# Clever ids are 24 hexadecimal characters (Mongo ObjectIds), globally unique.
CleverId = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{24}$")]


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# A Clever time: one without a zone is UTC (see the module's docstring), never a naive datetime
# that fails when the consumer compares it with the aware times it stores.
CleverTime = Annotated[datetime, AfterValidator(_as_utc)]

RECORD_KINDS = ("districts", "schools", "users", "sections", "courses", "terms", "resources")
ACTIONS = ("created", "updated", "deleted")
EVENT_TYPES = tuple(f"{kind}.{action}" for kind in RECORD_KINDS for action in ACTIONS)


class CleverModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Timestamps(CleverModel):
    created: CleverTime | None = None
    last_modified: CleverTime | None = None


# --- what the pipeline can carry -------------------------------------------------------------

# The deepest nesting of an event, counting the event object as level 1. Clever's events are under
# ten levels deep; every parser on the way goes deeper than this: the consumer's (pydantic's JSON
# parser: 200 levels), the door's re-serialisation of a page's events (orjson.dumps: 254) and
# PostgreSQL's jsonb. The door refuses a deeper event (400), so the consumer never sees one.
MAX_DEPTH = 64

# The largest event, as JSON, any door publishes (a page may hold several). A section of 150,000
# students fits. Kafka's record limit (service/kafka/config.py) is derived from it.
MAX_EVENT_BYTES = 5 * 1024 * 1024

_NUL_ESCAPE = b"\\u0000"  # JSON can write U+0000 only this way (a raw control byte is invalid)


def unstorable(raw: bytes | None, document: object) -> tuple[str, str] | None:
    """The first place in an event (its JSON `raw`, parsed as `document`) that the pipeline could
    not carry, as (field path, why); None when there is none. The rule both doors apply:

    - no string, key or value, may hold U+0000: PostgreSQL refuses it in text and jsonb alike, so
      it is refused with 400 rather than removed (the event is kept exactly as Clever sent it);
    - no event may be nested deeper than `MAX_DEPTH` levels.
    """
    # Cheap for nearly every event: U+0000 needs the escape in the bytes, and the nesting is at
    # most the number of opening brackets. Only an event failing either is walked.
    if (
        raw is not None
        and _NUL_ESCAPE not in raw
        and raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH
    ):
        return None
    return _walk(document, [], 1)


def _walk(value: object, path: list[str], depth: int) -> tuple[str, str] | None:
    if isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            return _where(path), f"nested deeper than {MAX_DEPTH} levels"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                return _where(path), "a key holds the character U+0000, which cannot be stored"
            found = _walk(item, [*path, str(key)], depth + 1)
            if found is not None:
                return found
    elif isinstance(value, str) and "\x00" in value:
        return _where(path), "holds the character U+0000, which cannot be stored"
    return None


def _where(path: list[str]) -> str:
    return ".".join(path)[:200] or "(event)"


# --- objects ----------------------------------------------------------------------------------


class District(Timestamps):
    id: CleverId
    name: str | None = None
    state: str | None = None
    pause_start: CleverTime | None = None
    pause_end: CleverTime | None = None
    sis_type: str | None = None

    @property
    def district_id(self) -> str:
        return self.id


class DistrictOwned(Timestamps):
    id: CleverId
    district: CleverId

    @property
    def district_id(self) -> str:
        return self.district


class School(DistrictOwned):
    name: str | None = None
    sis_id: str | None = None
    school_number: str | None = None
    nces_id: str | None = None
    low_grade: str | None = None
    high_grade: str | None = None
    location: dict[str, Any] | None = None
    principal: dict[str, Any] | None = None


class Name(CleverModel):
    first: str | None = None
    middle: str | None = None
    last: str | None = None


class Enrollment(CleverModel):
    school: CleverId
    start_date: str | None = None
    end_date: str | None = None


class StudentRole(CleverModel):
    sis_id: str | None = None
    student_number: str | None = None
    state_id: str | None = None
    grade: str | None = None
    dob: str | None = None
    school: CleverId | None = None  # the primary school, derived by Clever
    schools: list[CleverId] = Field(default_factory=list)
    enrollments: list[Enrollment] = Field(default_factory=list)


class TeacherRole(CleverModel):
    sis_id: str | None = None
    school: CleverId | None = None
    schools: list[CleverId] = Field(default_factory=list)
    title: str | None = None


class StaffRole(CleverModel):
    schools: list[CleverId] = Field(default_factory=list)
    department: str | None = None


class StudentRelationship(CleverModel):
    student: CleverId
    relationship: str | None = None
    type: str | None = None


class ContactRole(CleverModel):
    student_relationships: list[StudentRelationship] = Field(default_factory=list)


class DistrictAdminRole(CleverModel):
    pass


class Roles(CleverModel):
    student: StudentRole | None = None
    teacher: TeacherRole | None = None
    staff: StaffRole | None = None
    district_admin: DistrictAdminRole | None = None
    contact: ContactRole | None = None


class User(DistrictOwned):
    email: str | None = None
    name: Name = Field(default_factory=Name)
    roles: Roles = Field(default_factory=Roles)


class Section(DistrictOwned):
    school: CleverId  # exactly one
    name: str | None = None
    sis_id: str | None = None
    subject: str | None = None
    grade: str | None = None
    period: str | None = None
    course: CleverId | None = None
    term_id: CleverId | None = None
    teacher: CleverId | None = None  # the primary teacher
    teachers: list[CleverId] = Field(default_factory=list)
    students: list[CleverId] = Field(default_factory=list)


class Course(DistrictOwned):
    name: str | None = None
    number: str | None = None


class Term(DistrictOwned):
    name: str | None = None
    start_date: str | None = None
    end_date: str | None = None


class Resource(DistrictOwned):
    resource_id: str | None = None
    title: str | None = None
    roles: list[str] = Field(default_factory=list)


CleverObject = District | School | User | Section | Course | Term | Resource

# --- events -----------------------------------------------------------------------------------

ObjectT = TypeVar("ObjectT", District, School, User, Section, Course, Term, Resource)


class EventData(CleverModel, Generic[ObjectT]):
    object: ObjectT  # the full record as it now is (as it last was, on a delete)
    previous_attributes: dict[str, Any] | None = None


class EventBase(CleverModel, Generic[ObjectT]):
    id: CleverId
    created: CleverTime
    data: EventData[ObjectT]

    @property
    def object(self) -> ObjectT:
        return self.data.object

    @property
    def district_id(self) -> str:
        return self.data.object.district_id


class DistrictEvent(EventBase[District]):
    type: Literal["districts.created", "districts.updated", "districts.deleted"]


class SchoolEvent(EventBase[School]):
    type: Literal["schools.created", "schools.updated", "schools.deleted"]


class UserEvent(EventBase[User]):
    type: Literal["users.created", "users.updated", "users.deleted"]


class SectionEvent(EventBase[Section]):
    type: Literal["sections.created", "sections.updated", "sections.deleted"]


class CourseEvent(EventBase[Course]):
    type: Literal["courses.created", "courses.updated", "courses.deleted"]


class TermEvent(EventBase[Term]):
    type: Literal["terms.created", "terms.updated", "terms.deleted"]


class ResourceEvent(EventBase[Resource]):
    type: Literal["resources.created", "resources.updated", "resources.deleted"]


AnyEvent = (
    DistrictEvent | SchoolEvent | UserEvent | SectionEvent | CourseEvent | TermEvent | ResourceEvent
)
CleverEvent = Annotated[AnyEvent, Field(discriminator="type")]

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(CleverEvent)


class EnvelopeItem(CleverModel):
    data: dict[str, Any]


class EventsPage(CleverModel):
    """Clever's list envelope (a page of `GET /v3.0/events`): each event wrapped in `data`."""

    data: list[EnvelopeItem]
    links: list[dict[str, Any]] = Field(default_factory=list)
