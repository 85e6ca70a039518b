"""What routing is asked to do: by the journey log (a referral made, a referral closed)
and by the link-worker service it routed a referral to (accept, decline)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from schemas.events.referral import ReferralCreated


@dataclass(frozen=True)
class OpenCase:
    """A new referral (``referral-created`` event ``event_id`` at ``at``): route it."""

    created: ReferralCreated
    event_id: UUID
    at: datetime


@dataclass(frozen=True)
class AcceptReferral:
    """The routed service (``org``) takes the referral on."""

    referral_id: UUID
    org: str
    accepted_at: datetime


@dataclass(frozen=True)
class DeclineReferral:
    """The routed service declines (``reason``: a ``DeclineReason``); route it onwards."""

    referral_id: UUID
    org: str
    reason: str
    declined_at: datetime


@dataclass(frozen=True)
class ReleasePlace:
    """The referral was closed (``referral-closed`` at ``at``): its place is free again."""

    referral_id: UUID
    at: datetime


Command = OpenCase | AcceptReferral | DeclineReferral | ReleasePlace
