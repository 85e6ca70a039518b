"""What a referrer sends: the person (kept in intake) and the referral (goes on the bus)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.events import Need
from services.intake.nhs_number import check_digit_is_valid as nhs_number_is_valid
from services.intake.nhs_number import nhs_number_problem

__all__ = ["nhs_number_is_valid"]


class Person(BaseModel):
    """Personal details: encrypted in intake's store, never on the bus, never logged."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    date_of_birth: date
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
    model_config = ConfigDict(extra="forbid")

    share_with_link_worker: bool = Field(
        description="The person agreed to be referred; must be true"
    )
    share_outcomes_with_referrer: bool = False


class ReferralRequest(BaseModel):
    """``POST /referrals``."""

    model_config = ConfigDict(extra="forbid")

    person: Person
    needs: list[Need] = Field(min_length=1)
    consent: Consent
    area: str = Field(min_length=1, max_length=100)
    urgency: Literal["routine", "urgent", "asap"] = "routine"
    referred_at: AwareDatetime


class ReferralCreatedResponse(BaseModel):
    referral_id: UUID
    person_ref: str


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
    fetched_at: datetime
