"""The referral's own lifecycle: created, routed, accepted or declined, escalated, closed.

Mirrors the Gravity IG's ServiceRequest + Task (requested → accepted | rejected, with a
reason required for rejection), but as facts that happened rather than a mutable status.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, StringConstraints, field_validator

from schemas.events.base import Area, EventModel, Need, OrgId, Part, ShortText, Slug


class Urgency(StrEnum):
    """Gravity Task priority, without ``stat``: social prescribing is never an emergency."""

    ROUTINE = "routine"
    URGENT = "urgent"
    ASAP = "asap"


class AgeBand(StrEnum):
    """Banded age: enough for eligibility and reporting, too coarse to identify anyone."""

    AGE_16_24 = "16-24"
    AGE_25_34 = "25-34"
    AGE_35_49 = "35-49"
    AGE_50_64 = "50-64"
    AGE_65_74 = "65-74"
    AGE_75_PLUS = "75+"


class Consent(Part):
    """What the person agreed to; without consent to see a link worker there is no referral."""

    share_with_link_worker: Literal[True] = Field(
        description="Must be true: a referral is only made with the person's consent."
    )
    share_outcomes_with_referrer: bool = Field(
        description="Whether the referrer may see the outcome summary (the message back)."
    )


class DeclineReason(StrEnum):
    """Why a link-worker service declined (Gravity's capacity answers plus the person's own)."""

    NO_CAPACITY = "no-capacity"
    NOT_ELIGIBLE = "not-eligible"
    OUT_OF_AREA = "out-of-area"
    PERSON_DECLINED = "person-declined"
    OTHER = "other"


class ClosureReason(StrEnum):
    """How an episode ended; what the message back to the referrer reports."""

    COMPLETED = "completed"
    DISENGAGED = "disengaged"
    DECLINED_BY_PERSON = "declined-by-person"
    MOVED_AWAY = "moved-away"
    REFERRED_ELSEWHERE = "referred-elsewhere"
    DIED = "died"
    OTHER = "other"


PersonRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{4,64}$")]
"""A random pseudonym; the pattern keeps anything name-like (spaces, punctuation) out."""


class ReferralCreated(EventModel):
    """A referrer asked for social prescribing for a person (who is only a pseudonym here)."""

    event_type: ClassVar[str] = "referral-created"
    version: ClassVar[int] = 1

    referral_id: UUID
    person_ref: PersonRef
    referrer_org: OrgId
    referrer_kind: Slug
    needs: list[Need] = Field(min_length=1)
    urgency: Urgency
    consent: Consent
    area: Area
    age_band: AgeBand
    referred_at: AwareDatetime

    @field_validator("needs")
    @classmethod
    def _needs_once_each(cls, needs: list[Need]) -> list[Need]:
        if len(set(needs)) != len(needs):
            raise ValueError("each need may be listed once")
        return needs


class ReferralRouted(EventModel):
    """Routing chose a link-worker service; ``attempt`` counts re-routes after declines."""

    event_type: ClassVar[str] = "referral-routed"
    version: ClassVar[int] = 1

    referral_id: UUID
    service_org: OrgId
    attempt: int = Field(ge=1)
    reason: ShortText = Field(description='Why this service, e.g. "area+needs+capacity".')


class ReferralAccepted(EventModel):
    """The routed link-worker service took the referral on."""

    event_type: ClassVar[str] = "referral-accepted"
    version: ClassVar[int] = 1

    referral_id: UUID
    service_org: OrgId
    accepted_at: AwareDatetime


class ReferralDeclined(EventModel):
    """The routed service declined; routing tries the next one."""

    event_type: ClassVar[str] = "referral-declined"
    version: ClassVar[int] = 1

    referral_id: UUID
    service_org: OrgId
    reason: DeclineReason
    declined_at: AwareDatetime


class ReferralEscalated(EventModel):
    """No service is left to try: a person at the alliance must act."""

    event_type: ClassVar[str] = "referral-escalated"
    version: ClassVar[int] = 1

    referral_id: UUID
    reason: ShortText
    tried: list[OrgId] = Field(description="Services tried, in order.")


class ReferralClosed(EventModel):
    """The episode ended; triggers the message back to the referrer."""

    event_type: ClassVar[str] = "referral-closed"
    version: ClassVar[int] = 1

    referral_id: UUID
    reason: ClosureReason
    closed_at: AwareDatetime
