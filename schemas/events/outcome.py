"""An outcome measurement at a timepoint, validated against the measure's real range."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Self
from uuid import UUID

from pydantic import AwareDatetime, FiniteFloat, StrictInt, model_validator

from schemas.events.base import EventModel
from schemas.measures import Measure, MeasureError, ScoredOutcome, score_outcome


class Timepoint(StrEnum):
    """When in the episode a measure was taken; improvement is follow-up/discharge - baseline."""

    BASELINE = "baseline"
    FOLLOW_UP = "follow-up"
    DISCHARGE = "discharge"


class OutcomeRecorded(EventModel):
    """A measurement: the answers (if kept) and always the headline score (none for ONS4).

    The headline is stored, not left to each consumer to derive, so every view and the
    alliance report compare the same number; use :meth:`record` to compute it.
    """

    event_type: ClassVar[str] = "outcome-recorded"
    version: ClassVar[int] = 1

    referral_id: UUID
    measure: Measure
    timepoint: Timepoint
    items: list[StrictInt] | None = None
    score: FiniteFloat | None = None
    recorded_at: AwareDatetime

    @model_validator(mode="after")
    def _in_range(self) -> Self:
        scored = self.scored()
        if self.score is None and scored.score is not None:
            raise MeasureError("score", f"the headline score {scored.score}", None)
        return self

    def scored(self) -> ScoredOutcome:
        """The validated measurement, for :func:`schemas.measures.improvement`."""
        return score_outcome(self.measure, self.items, self.score)

    @classmethod
    def record(
        cls,
        *,
        referral_id: UUID,
        measure: Measure,
        timepoint: Timepoint,
        items: list[int] | None,
        score: float | None,
        recorded_at: datetime,
    ) -> OutcomeRecorded:
        """Build the event from what a partner sent, filling in the headline score."""
        scored = score_outcome(measure, items, score)
        return cls(
            referral_id=referral_id,
            measure=measure,
            timepoint=timepoint,
            items=items,
            score=scored.score,
            recorded_at=recorded_at,
        )
