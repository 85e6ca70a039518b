"""Onward activities: the link worker connects the person to a group or service.

Attendance is recorded by the activity's provider, which closes the loop that
voluntary groups say is missing ("scattergun referrals" nobody follows up).
"""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from pydantic import AwareDatetime

from schemas.events.base import EventModel, OrgId, Slug


class ActivityReferred(EventModel):
    """The person was connected to an activity from the directory."""

    event_type: ClassVar[str] = "activity-referred"
    version: ClassVar[int] = 1

    referral_id: UUID
    activity_id: Slug
    provider_org: OrgId
    activity_kind: Slug
    referred_at: AwareDatetime


class ActivityAttended(EventModel):
    """The provider recorded whether the person came (``attended`` false: a no-show)."""

    event_type: ClassVar[str] = "activity-attended"
    version: ClassVar[int] = 1

    referral_id: UUID
    activity_id: Slug
    provider_org: OrgId
    attended_at: AwareDatetime
    attended: bool
