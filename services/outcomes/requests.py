"""What the routed link-worker service (and activity providers) send to outcomes."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Mode = Literal["in-person", "phone", "video"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FirstContact(Strict):
    contacted_at: AwareDatetime
    mode: Mode = "phone"


class SessionHeld(Strict):
    kind: Literal["longer-appointment", "short-conversation", "group", "accompanied-visit", "other"]
    minutes: int = Field(ge=1, le=600)
    mode: Mode
    held_at: AwareDatetime


class ActivityReferral(Strict):
    activity_id: str = Field(min_length=1, max_length=64)
    referred_at: AwareDatetime


class Attendance(Strict):
    attended_at: AwareDatetime
    attended: bool = True


class OutcomeRecord(Strict):
    measure: Literal["ons4", "swemwbs", "wemwbs", "ucla3", "activity-minutes"]
    timepoint: Literal["baseline", "follow-up", "discharge"]
    items: list[int] | None = Field(default=None, description="item scores, in the measure's order")
    score: float | None = Field(default=None, description="when the measure has no items")
    recorded_at: AwareDatetime


class Closing(Strict):
    reason: Literal[
        "completed",
        "disengaged",
        "declined-by-person",
        "moved-away",
        "referred-elsewhere",
        "died",
        "other",
    ]
    closed_at: AwareDatetime


class Recorded(BaseModel):
    """What every outcomes command answers: the event it recorded."""

    referral_id: UUID
    event_id: UUID
    type: str
    stream_version: int
    session_id: UUID | None = None
    score: float | None = None
