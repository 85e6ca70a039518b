"""What the routed link-worker service (and activity providers) send to outcomes.

Every field that becomes part of an event uses the bus contract's own type
(``schemas.events``: contact modes, session kinds and minutes, measures, timepoints,
closure reasons, directory ids), so the API and the events cannot drift apart;
``tests/unit/test_request_contract.py`` checks every field against its event's. What
only the API adds: times must be plausible (``web.fields.WorldTime``), numbers must be
JSON numbers (no ``true`` or ``"45"``), and lists are bounded in size.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FiniteFloat

from schemas.events.base import ContactMode, Slug
from schemas.events.contact import Minutes, SessionKind
from schemas.events.outcome import Timepoint
from schemas.events.referral import ClosureReason
from schemas.measures import Measure
from web.fields import Count, Flag, WorldTime, number_only

Score = Annotated[FiniteFloat, BeforeValidator(number_only)]
"""A JSON number the event can hold: ``NaN`` and ``Infinity`` are refused."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FirstContact(Strict):
    contacted_at: WorldTime
    mode: ContactMode = ContactMode.PHONE


class SessionHeld(Strict):
    kind: SessionKind
    minutes: Annotated[Minutes, BeforeValidator(number_only)]
    mode: ContactMode
    held_at: WorldTime


class ActivityReferral(Strict):
    activity_id: Slug
    referred_at: WorldTime


class Attendance(Strict):
    attended_at: WorldTime
    attended: Flag = True


class MeasureTaken(Strict):
    measure: Measure
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
    measures: list[MeasureTaken] = Field(min_length=1, max_length=len(Measure))


class Closing(Strict):
    reason: ClosureReason
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
