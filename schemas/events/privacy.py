"""The person's rights over their data: consent withdrawn, details erased (UK GDPR Art. 7, 17).

Both are facts about one referral, appended to intake's stream of it (intake holds the
person and the consent given at referral). Neither carries anything about the person:
an erasure says *that* the details were destroyed, never what they were.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from pydantic import AwareDatetime, Field

from schemas.events.base import EventModel, OrgId


class WithdrawnConsent(StrEnum):
    """Which part of the consent given at referral the person took back.

    Consent to see a link worker cannot be withdrawn this way: without it there is no
    referral, and the routed service closes it (``declined-by-person``) instead.
    """

    SHARE_OUTCOMES_WITH_REFERRER = "share-outcomes-with-referrer"


class ErasureReason(StrEnum):
    """The ground for erasure, as UK GDPR Art. 17(1) lists them (a code, never free text:
    the event travels on the bus, where a note could carry personal data)."""

    NO_LONGER_NECESSARY = "no-longer-necessary"  # 17(1)(a)
    CONSENT_WITHDRAWN = "consent-withdrawn"  # 17(1)(b)
    OBJECTION = "objection"  # 17(1)(c)
    UNLAWFULLY_PROCESSED = "unlawfully-processed"  # 17(1)(d)
    LEGAL_OBLIGATION = "legal-obligation"  # 17(1)(e)


class ConsentWithdrawn(EventModel):
    """The person withdrew part of their consent; sharing it covered stops at once."""

    event_type: ClassVar[str] = "consent-withdrawn"
    version: ClassVar[int] = 1

    referral_id: UUID
    consent: WithdrawnConsent
    recorded_by: OrgId = Field(description="The referrer or link-worker service told of it.")
    withdrawn_at: AwareDatetime


class PersonErased(EventModel):
    """The person's details were destroyed (their data key shredded): nobody can read them.

    One per referral of the person, so every partner entitled to any of them learns it.
    ``requested_by`` is the organisation that asked, or None for the alliance's operator
    (``referralnet erase``).
    """

    event_type: ClassVar[str] = "person-erased"
    version: ClassVar[int] = 1

    referral_id: UUID
    reason: ErasureReason
    requested_by: OrgId | None = None
    erased_at: AwareDatetime
