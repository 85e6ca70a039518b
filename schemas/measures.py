"""Outcome measures: their real ranges, how each is scored, and what "better" means.

Alliances compare outcomes across link-worker services, so a value out of a measure's
range must be refused at the door, never averaged into a report (DOMAIN.md, "Outcome
measures"). Inputs are either the items a person answered or, where the measure allows,
the headline score alone (a partner that only kept the total).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class Measure(StrEnum):
    """The outcome measures the network accepts."""

    ONS4 = "ons4"
    SWEMWBS = "swemwbs"
    WEMWBS = "wemwbs"
    UCLA3 = "ucla3"
    ACTIVITY_MINUTES = "activity-minutes"


class ActivityLevel(StrEnum):
    """Weekly moderate-or-vigorous activity bands (vigorous minutes count double)."""

    ACTIVE = "active"
    FAIRLY_ACTIVE = "fairly-active"
    INACTIVE = "inactive"


class MeasureError(ValueError):
    """A value outside its measure's range; names the field path and what is allowed.

    A ValueError, so inside a pydantic validator it becomes an ordinary validation error.
    """

    def __init__(self, field: str, allowed: str, got: object) -> None:
        super().__init__(f"{field}: allowed {allowed}, got {got!r}")
        self.field = field
        self.allowed = allowed
        self.got = got


ONS4_ITEMS = ("life_satisfaction", "worthwhile", "happy", "anxious")
"""ONS4 item names in answer order; ``anxious`` is the one where lower is better."""

UCLA3_ITEMS = ("lack_companionship", "left_out", "isolated")

_ITEM_NAMES: dict[Measure, tuple[str, ...]] = {Measure.ONS4: ONS4_ITEMS, Measure.UCLA3: UCLA3_ITEMS}

# Warwick-Edinburgh (SWEMWBS) raw total -> metric score. From public scoring scripts;
# the official table is registration-gated (DOMAIN.md: verify before relying on it).
SWEMWBS_METRIC: dict[int, float] = {
    7: 7.00, 8: 9.51, 9: 11.25, 10: 12.40, 11: 13.33, 12: 14.08, 13: 14.75,
    14: 15.32, 15: 15.84, 16: 16.36, 17: 16.88, 18: 17.43, 19: 17.98, 20: 18.59,
    21: 19.25, 22: 19.98, 23: 20.73, 24: 21.54, 25: 22.35, 26: 23.21, 27: 24.11,
    28: 25.03, 29: 26.02, 30: 27.03, 31: 28.13, 32: 29.31, 33: 30.70, 34: 32.55,
    35: 35.00,
}  # fmt: skip

MAX_WEEKLY_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class _Scale:
    """How many items a measure has and the inclusive range of each."""

    count: int
    low: int
    high: int
    higher_is_better: bool


_SCALES: dict[Measure, _Scale] = {
    Measure.ONS4: _Scale(4, 0, 10, True),
    Measure.SWEMWBS: _Scale(7, 1, 5, True),
    Measure.WEMWBS: _Scale(14, 1, 5, True),
    Measure.UCLA3: _Scale(3, 1, 3, False),
}


@dataclass(frozen=True)
class ScoredOutcome:
    """A validated measurement and its headline score.

    ``score`` is what reports compare: SWEMWBS metric score, WEMWBS raw total, UCLA-3
    total, weekly activity minutes. ONS4 has no headline (its items are never summed),
    so ``score`` is None and ``per_item`` holds the four answers by name; for ONS4
    ``higher_is_better`` describes three items, ``anxious`` being the inverse.
    """

    measure: Measure
    items: tuple[int, ...] | None
    score: float | None
    higher_is_better: bool
    per_item: dict[str, int] | None = field(default=None, hash=False)
    activity_level: ActivityLevel | None = None


def swemwbs_metric(raw: int) -> float:
    """Convert a SWEMWBS raw total (7-35) to its metric score."""
    try:
        return SWEMWBS_METRIC[raw]
    except KeyError:
        raise MeasureError("score", "a SWEMWBS raw total 7-35", raw) from None


def activity_level(minutes: float) -> ActivityLevel:
    """Band weekly activity minutes: active >= 150, fairly active 30-149, inactive < 30."""
    if minutes >= 150:
        return ActivityLevel.ACTIVE
    return ActivityLevel.FAIRLY_ACTIVE if minutes >= 30 else ActivityLevel.INACTIVE


def score_outcome(measure: Measure, items: list[int] | None, score: float | None) -> ScoredOutcome:
    """Validate a measurement and compute its headline score.

    Give ``items`` (the answers, in order) or ``score`` (the headline, as
    :class:`ScoredOutcome` defines it), or both, in which case they must agree. Weekly
    activity minutes has no items; ONS4 has no score.
    """
    measure = Measure(measure)
    if measure is Measure.ACTIVITY_MINUTES:
        return _score_activity(items, score)
    scale = _SCALES[measure]
    if items is None:
        if score is None:
            raise MeasureError("items", f"{scale.count} answers {scale.low}-{scale.high}", None)
        return ScoredOutcome(measure, None, _check_headline(measure, score), scale.higher_is_better)
    answers = _check_items(measure, scale, items)
    if measure is Measure.ONS4:
        if score is not None:
            raise MeasureError("score", "none: ONS4 items are reported, never summed", score)
        per_item = dict(zip(ONS4_ITEMS, answers, strict=True))
        return ScoredOutcome(measure, answers, None, True, per_item=per_item)
    total = sum(answers)
    headline = swemwbs_metric(total) if measure is Measure.SWEMWBS else float(total)
    if score is not None and not math.isclose(score, headline, abs_tol=0.005):
        raise MeasureError("score", f"{headline} (the score of the items given)", score)
    return ScoredOutcome(measure, answers, headline, scale.higher_is_better)


def improvement(measure: Measure, baseline: ScoredOutcome, latest: ScoredOutcome) -> float:
    """Signed change from ``baseline`` to ``latest``; positive always means better.

    For ONS4 it is the mean of the four item changes with ``anxious`` negated: the items
    are never summed into a score, but "did this person improve" needs one number, and
    a mean keeps it on the 0-10 item scale (so +1.0 reads "one point better per item").
    Reports that want the items separately use :func:`item_improvements`.
    """
    if measure is Measure.ONS4:
        changes = item_improvements(baseline, latest)
        return sum(changes.values()) / len(changes)
    for name, outcome in (("baseline", baseline), ("latest", latest)):
        if outcome.measure != measure:
            raise MeasureError(f"{name}.measure", str(measure), str(outcome.measure))
        if outcome.score is None:
            raise MeasureError(f"{name}.score", "a headline score", None)
    assert baseline.score is not None and latest.score is not None
    change = latest.score - baseline.score
    return change if baseline.higher_is_better else -change


def item_improvements(baseline: ScoredOutcome, latest: ScoredOutcome) -> dict[str, float]:
    """ONS4 change per item, positive = better (``anxious`` negated, lower is better)."""
    for name, outcome in (("baseline", baseline), ("latest", latest)):
        if outcome.measure is not Measure.ONS4 or outcome.per_item is None:
            raise MeasureError(f"{name}.items", "ONS4 answers", outcome.items)
    assert baseline.per_item is not None and latest.per_item is not None
    return {
        item: float(latest.per_item[item] - baseline.per_item[item])
        * (-1 if item == "anxious" else 1)
        for item in ONS4_ITEMS
    }


def _check_items(measure: Measure, scale: _Scale, items: list[int]) -> tuple[int, ...]:
    if len(items) != scale.count:
        raise MeasureError("items", f"exactly {scale.count} answers for {measure}", len(items))
    names = _ITEM_NAMES.get(measure, ())
    for i, answer in enumerate(items):
        # type() rather than isinstance(): True is an int but not an answer.
        if type(answer) is not int or not scale.low <= answer <= scale.high:
            label = f"items[{i}]" + (f" ({names[i]})" if names else "")
            raise MeasureError(label, f"an integer {scale.low}-{scale.high}", answer)
    return tuple(items)


def _check_headline(measure: Measure, score: float) -> float:
    """A headline given without items: in range, and a value the measure can produce."""
    if measure is Measure.ONS4:
        raise MeasureError("items", "4 answers 0-10 (ONS4 has no summed score)", None)
    if measure is Measure.SWEMWBS:
        for metric in SWEMWBS_METRIC.values():
            if _is_number(score) and math.isclose(score, metric, abs_tol=0.005):
                return metric
        raise MeasureError("score", "a SWEMWBS metric score 7.00-35.00 from the table", score)
    scale = _SCALES[measure]
    low, high = scale.count * scale.low, scale.count * scale.high
    if not (_is_number(score) and float(score).is_integer() and low <= score <= high):
        raise MeasureError("score", f"a whole-number {measure} total {low}-{high}", score)
    return float(score)


def _score_activity(items: list[int] | None, score: float | None) -> ScoredOutcome:
    if items is not None:
        raise MeasureError("items", "none: weekly activity is a single score in minutes", items)
    if score is None or not (_is_number(score) and 0 <= score <= MAX_WEEKLY_MINUTES):
        raise MeasureError("score", f"weekly minutes 0-{MAX_WEEKLY_MINUTES}", score)
    minutes = float(score)
    return ScoredOutcome(
        Measure.ACTIVITY_MINUTES, None, minutes, True, activity_level=activity_level(minutes)
    )


def _is_number(value: object) -> bool:
    """A finite int or float, and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
