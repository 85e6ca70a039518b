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


MeasureName = Literal["ons4", "swemwbs", "wemwbs", "ucla3", "activity-minutes"]
Timepoint = Literal["baseline", "follow-up", "discharge"]


class MeasureTaken(Strict):
    measure: MeasureName
    items: list[int] | None = Field(default=None, description="item scores, in the measure's order")
    score: float | None = Field(default=None, description="when the measure has no items")


class OutcomeRecord(MeasureTaken):
    timepoint: Timepoint
    recorded_at: AwareDatetime


class Assessment(Strict):
    """The measures taken at one sitting (a baseline or follow-up review): all are valid
    and recorded together, or none is."""

    timepoint: Timepoint
    recorded_at: AwareDatetime
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
    closed_at: AwareDatetime


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
