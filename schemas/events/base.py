"""What every event model shares: immutability, no unknown fields, a type and a version.

``extra="forbid"`` is what keeps personal data off the bus by construction: a field
that is not in the schema (a name, a note) is refused, not silently carried along.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, StringConstraints

from schemas.dataschema import dataschema_uri

# Same spelling as the directory's organisation and activity ids (a lowercase slug).
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"

OrgId = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
"""An organisation id from the alliance directory."""

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
"""A directory id or kind that is not an organisation (an activity, a kind of referrer)."""

MACHINE_TEXT_PATTERN = r"^[a-z0-9][a-z0-9 ;:()+.-]{0,119}$"
"""Lower-case words, digits and a little punctuation, no commas: what routing writes
("area north; covers 2 need(s); 5 place(s) left"), and too poor to carry a name or an
address."""

ShortText = Annotated[
    str, StringConstraints(min_length=1, max_length=120, pattern=MACHINE_TEXT_PATTERN)
]
"""A machine-written explanation; short and plain so that it cannot become a case note."""

AREA_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
"""An area of the alliance directory, spelt as a slug ("north", "coast-east")."""

Area = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=AREA_PATTERN)]
"""An area of the alliance directory (the referral's, and the request's that makes it)."""


class Need(StrEnum):
    """Why a person is referred: the Gravity SDOH domains plus the health-related needs
    social prescribing also takes (physical activity, mental wellbeing, long-term condition)."""

    SOCIAL_CONNECTION = "social-connection"
    STRESS = "stress"
    FINANCIAL_INSECURITY = "financial-insecurity"
    HOUSING_INSTABILITY = "housing-instability"
    HOMELESSNESS = "homelessness"
    FOOD_INSECURITY = "food-insecurity"
    EMPLOYMENT_STATUS = "employment-status"
    TRANSPORTATION_INSECURITY = "transportation-insecurity"
    DIGITAL_ACCESS = "digital-access"
    PHYSICAL_ACTIVITY = "physical-activity"
    MENTAL_WELLBEING = "mental-wellbeing"
    LONG_TERM_CONDITION = "long-term-condition"


class ContactMode(StrEnum):
    """How a link worker met the person."""

    IN_PERSON = "in-person"
    PHONE = "phone"
    VIDEO = "video"


def _schema_id(schema: dict[str, Any], cls: type[Any]) -> None:
    """Give each generated JSON Schema the same URI that ``ce_dataschema`` carries."""
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = dataschema_uri(cls.event_type, cls.version)


class EventModel(BaseModel):
    """Base of every event's data; ``event_type`` and ``version`` name its schema."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_schema_id)

    event_type: ClassVar[str]
    version: ClassVar[int]


class Part(BaseModel):
    """Base of a value nested inside an event (same strictness, no schema id of its own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
