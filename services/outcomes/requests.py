"""What the routed link-worker service (and activity providers) send to outcomes."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from web.fields import Count, Flag, Score, Slug, WorldTime

Mode = Literal["in-person", "phone", "video"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FirstContact(Strict):
    contacted_at: WorldTime
    mode: Mode = "phone"


class SessionHeld(Strict):
    kind: Literal["longer-appointment", "short-conversation", "group", "accompanied-visit", "other"]
    minutes: Count = Field(ge=1, le=600)
    mode: Mode
    held_at: WorldTime


class ActivityReferral(Strict):
    activity_id: Slug
    referred_at: WorldTime


class Attendance(Strict):
    attended_at: WorldTime
    attended: Flag = True


MeasureName = Literal["ons4", "swemwbs", "wemwbs", "ucla3", "activity-minutes"]
Timepoint = Literal["baseline", "follow-up", "discharge"]


class MeasureTaken(Strict):
    measure: MeasureName
    items: list[Count] | None = Field(
        max_length=20, default=None, description="item scores, in the measure's order"
    )
    score: Score | None = Field(default=None, description="when the measure has no items")


class OutcomeRecord(MeasureTaken):
    timepoint: Timepoint
    recorded_at: WorldTime


class Assessment(Strict):
    """The measures taken at one sitting (a baseline or follow-up review): all are valid
    and recorded together, or none is."""

    timepoint: Timepoint
    recorded_at: WorldTime
    measures: list[MeasureTaken] = Field(min_length=1, max_length=5)


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
    closed_at: WorldTime


class Recorded(BaseModel):
    """What every outcomes command answers: the event it recorded."""

    referral_id: UUID
    event_id: UUID
    type: str
    stream_version: int
    session_id: UUID | None = None
    score: float | None = None


class AssessmentRecorded(BaseModel):
    """One ``outcome-recorded`` event per measure, in the order given."""

    referral_id: UUID
    recorded: list[Recorded]
