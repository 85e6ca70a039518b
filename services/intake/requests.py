"""What a referrer sends: the person (kept in intake) and the referral (goes on the bus).

The referral's fields use the bus contract's own types (``schemas.events``: needs,
urgency, area, consent), so the API and ``referral-created`` cannot drift apart;
``tests/unit/test_request_contract.py`` checks every field against the event's.
"""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.events import Need
from schemas.events.base import Area
from schemas.events.referral import Urgency
from services.intake.nhs_number import check_digit_is_valid as nhs_number_is_valid
from services.intake.nhs_number import nhs_number_problem
from web.fields import BirthDate, Flag, WorldTime

__all__ = ["nhs_number_is_valid"]


class Person(BaseModel):
    """Personal details: encrypted in intake's store, never on the bus, never logged."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    date_of_birth: BirthDate
    nhs_number: str | None = Field(default=None, description="10 digits, spaces allowed")
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=200)
    address: str | None = Field(default=None, max_length=500)
    notes: str | None = Field(default=None, max_length=4000)

    @field_validator("nhs_number")
    @classmethod
    def _nhs(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.replace(" ", "")
        problem = nhs_number_problem(digits)  # check digit, placeholders, the test range
        if problem:
            raise ValueError(problem)
        return digits

    def __repr__(self) -> str:  # keep personal data out of logs and tracebacks
        return "Person(<redacted>)"

    __str__ = __repr__


class Consent(BaseModel):
    # The event's Consent as a partner sends it: ``false`` for the link worker gets its own
    # reason (422, services.intake.domain), and not saying whether outcomes may be shared
    # means they may not (the event requires both).
    model_config = ConfigDict(extra="forbid")

    share_with_link_worker: Flag = Field(
        description="The person agreed to be referred; must be true",
        json_schema_extra={"const": True},
    )
    share_outcomes_with_referrer: Flag = False


class ReferralRequest(BaseModel):
    """``POST /referrals``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "person": {
                        "name": "Alex Example",
                        "date_of_birth": "1985-04-02",
                        "nhs_number": "943 476 5919",
                    },
                    "needs": ["social-connection"],
                    "consent": {
                        "share_with_link_worker": True,
                        "share_outcomes_with_referrer": True,
                    },
                    "area": "north",
                    "urgency": "routine",
                    "referred_at": "2026-01-05T10:00:00Z",
                }
            ]
        },
    )

    person: Person
    needs: list[Need] = Field(min_length=1, max_length=20)
    consent: Consent
    area: Area = Field(description="One of the directory's areas (GET /directory), e.g. 'north'")
    urgency: Urgency = Urgency.ROUTINE
    referred_at: WorldTime


class ReferralCreatedResponse(BaseModel):
    """The referral's id, and nothing about the person: returning the person's pseudonym
    would let a referrer confirm an NHS number by comparing it with those it holds."""

    referral_id: UUID


class PersonView(BaseModel):
    """What an entitled organisation is shown about the person."""

    name: str
    date_of_birth: date | None = None
    nhs_number: str | None = None
    phone: str | None = None
    email: str | None = None
    address: str | None = None
    notes: str | None = None


class ReferralDetail(BaseModel):
    """``GET /referrals/{id}``: the caller's own view row plus what its role may know."""

    referral_id: UUID
    role: str
    view: dict[str, object]
    person: PersonView | None = None
    person_erased: bool = Field(
        default=False,
        description="true: the person was erased (their details destroyed); person is null",
    )
    fetched_at: datetime
