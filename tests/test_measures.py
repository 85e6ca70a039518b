"""Outcome measures: real ranges at their edges, SWEMWBS conversion, which way is better."""

from __future__ import annotations

import math

import pytest

from schemas.measures import (
    ActivityLevel,
    Measure,
    MeasureError,
    ScoredOutcome,
    activity_level,
    improvement,
    item_improvements,
    score_outcome,
)

# Copied from DOMAIN.md rather than imported, so a typo in the module's table fails here.
SWEMWBS_TABLE = {
    7: 7.00, 8: 9.51, 9: 11.25, 10: 12.40, 11: 13.33, 12: 14.08, 13: 14.75, 14: 15.32,
    15: 15.84, 16: 16.36, 17: 16.88, 18: 17.43, 19: 17.98, 20: 18.59, 21: 19.25,
    22: 19.98, 23: 20.73, 24: 21.54, 25: 22.35, 26: 23.21, 27: 24.11, 28: 25.03,
    29: 26.02, 30: 27.03, 31: 28.13, 32: 29.31, 33: 30.70, 34: 32.55, 35: 35.00,
}  # fmt: skip


def refused(measure: Measure, items: list[int] | None, score: float | None) -> MeasureError:
    with pytest.raises(MeasureError) as caught:
        score_outcome(measure, items, score)
    return caught.value


def answers_totalling(total: int, count: int, low: int, high: int) -> list[int]:
    """``count`` answers within [low, high] adding up to ``total``."""
    items = [low] * count
    rest = total - low * count
    for i in range(count):
        step = min(high - low, rest)
        items[i] += step
        rest -= step
    assert rest == 0 and sum(items) == total
    return items


# --- ONS4 ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 10])
def test_ons4_items_at_the_edges_are_reported_per_item(value: int) -> None:
    scored = score_outcome(Measure.ONS4, [value] * 4, None)
    assert scored.score is None
    assert scored.per_item == {
        "life_satisfaction": value,
        "worthwhile": value,
        "happy": value,
        "anxious": value,
    }


@pytest.mark.parametrize(
    ("index", "value", "label"),
    [(0, -1, "life_satisfaction"), (1, 11, "worthwhile"), (2, -1, "happy"), (3, 11, "anxious")],
)
def test_ons4_item_out_of_range_names_the_item(index: int, value: int, label: str) -> None:
    items = [5, 5, 5, 5]
    items[index] = value
    error = refused(Measure.ONS4, items, None)
    assert error.field == f"items[{index}] ({label})"
    assert str(error) == f"items[{index}] ({label}): allowed an integer 0-10, got {value}"


@pytest.mark.parametrize("items", [[5, 5, 5], [5, 5, 5, 5, 5]])
def test_ons4_needs_exactly_four_answers(items: list[int]) -> None:
    error = refused(Measure.ONS4, items, None)
    assert error.field == "items"
    assert "exactly 4 answers" in str(error)


def test_ons4_is_never_summed() -> None:
    assert refused(Measure.ONS4, [5, 5, 5, 5], 20).field == "score"
    assert refused(Measure.ONS4, None, 20).field == "items"


@pytest.mark.parametrize("bad", [True, 5.0, "5"])
def test_answers_must_be_integers(bad: object) -> None:
    error = refused(Measure.ONS4, [5, 5, 5, bad], None)  # type: ignore[list-item]
    assert error.field == "items[3] (anxious)"


# --- SWEMWBS ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "metric"), sorted(SWEMWBS_TABLE.items()))
def test_swemwbs_raw_total_converts_to_the_metric_score(raw: int, metric: float) -> None:
    scored = score_outcome(Measure.SWEMWBS, answers_totalling(raw, 7, 1, 5), None)
    assert scored.score == metric
    assert scored.higher_is_better
    assert score_outcome(Measure.SWEMWBS, None, metric).score == metric


def test_swemwbs_table_covers_exactly_7_to_35() -> None:
    assert sorted(SWEMWBS_TABLE) == list(range(7, 36))


@pytest.mark.parametrize("value", [0, 6])
def test_swemwbs_item_out_of_range(value: int) -> None:
    error = refused(Measure.SWEMWBS, [3, 3, 3, 3, 3, 3, value], None)
    assert error.field == "items[6]"
    assert error.allowed == "an integer 1-5"


@pytest.mark.parametrize("score", [6.99, 20.0, 23.2, 35.01, 36, math.nan])
def test_swemwbs_score_alone_must_be_a_metric_value(score: float) -> None:
    assert refused(Measure.SWEMWBS, None, score).field == "score"


def test_swemwbs_items_and_score_must_agree() -> None:
    error = refused(Measure.SWEMWBS, [3] * 7, 21.0)
    assert error.allowed.startswith("19.25")


def test_swemwbs_needs_seven_answers() -> None:
    assert refused(Measure.SWEMWBS, [3] * 14, None).field == "items"


# --- WEMWBS -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "total"), [(1, 14.0), (5, 70.0)])
def test_wemwbs_total_at_the_edges(value: int, total: float) -> None:
    assert score_outcome(Measure.WEMWBS, [value] * 14, None).score == total
    assert score_outcome(Measure.WEMWBS, None, total).score == total


@pytest.mark.parametrize("value", [0, 6])
def test_wemwbs_item_out_of_range(value: int) -> None:
    assert refused(Measure.WEMWBS, [3] * 13 + [value], None).field == "items[13]"


@pytest.mark.parametrize("score", [13, 71, 50.5, math.inf])
def test_wemwbs_score_alone_must_be_a_whole_total_in_range(score: float) -> None:
    error = refused(Measure.WEMWBS, None, score)
    assert error.allowed == "a whole-number wemwbs total 14-70"


# --- UCLA-3 -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "total"), [(1, 3.0), (3, 9.0)])
def test_ucla3_total_at_the_edges(value: int, total: float) -> None:
    scored = score_outcome(Measure.UCLA3, [value] * 3, None)
    assert scored.score == total
    assert not scored.higher_is_better


@pytest.mark.parametrize("value", [0, 4])
def test_ucla3_item_out_of_range_names_the_question(value: int) -> None:
    error = refused(Measure.UCLA3, [2, value, 2], None)
    assert error.field == "items[1] (left_out)"
    assert error.allowed == "an integer 1-3"


@pytest.mark.parametrize("score", [2, 10])
def test_ucla3_score_alone_in_range(score: float) -> None:
    assert refused(Measure.UCLA3, None, score).allowed == "a whole-number ucla3 total 3-9"


# --- physical activity ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "level"),
    [
        (0, ActivityLevel.INACTIVE),
        (29, ActivityLevel.INACTIVE),
        (29.5, ActivityLevel.INACTIVE),
        (30, ActivityLevel.FAIRLY_ACTIVE),
        (149, ActivityLevel.FAIRLY_ACTIVE),
        (150, ActivityLevel.ACTIVE),
        (10080, ActivityLevel.ACTIVE),
    ],
)
def test_activity_minutes_are_banded(minutes: float, level: ActivityLevel) -> None:
    scored = score_outcome(Measure.ACTIVITY_MINUTES, None, minutes)
    assert scored.score == minutes
    assert scored.activity_level is level
    assert activity_level(minutes) is level


@pytest.mark.parametrize("minutes", [-1, 10081, math.nan, math.inf, None, True])
def test_activity_minutes_out_of_range(minutes: float | None) -> None:
    error = refused(Measure.ACTIVITY_MINUTES, None, minutes)
    assert (error.field, error.allowed) == ("score", "weekly minutes 0-10080")


def test_activity_has_no_items() -> None:
    assert refused(Measure.ACTIVITY_MINUTES, [150], None).field == "items"


@pytest.mark.parametrize("measure", [Measure.SWEMWBS, Measure.WEMWBS, Measure.UCLA3])
def test_items_or_score_is_required(measure: Measure) -> None:
    assert refused(measure, None, None).field == "items"


def test_measure_names_are_the_wire_values() -> None:
    assert [m.value for m in Measure] == ["ons4", "swemwbs", "wemwbs", "ucla3", "activity-minutes"]
    assert score_outcome("ucla3", [1, 1, 1], None).measure is Measure.UCLA3  # type: ignore[arg-type]


# --- improvement: positive is always better -----------------------------------------


def scored(
    measure: Measure, items: list[int] | None = None, score: float | None = None
) -> ScoredOutcome:
    return score_outcome(measure, items, score)


def test_swemwbs_improvement_is_the_metric_change() -> None:
    before, after = scored(Measure.SWEMWBS, [3] * 7), scored(Measure.SWEMWBS, [4] * 7)
    assert improvement(Measure.SWEMWBS, before, after) == pytest.approx(25.03 - 19.25)
    assert improvement(Measure.SWEMWBS, after, before) < 0


def test_wemwbs_improvement_is_the_total_change() -> None:
    before, after = scored(Measure.WEMWBS, score=40), scored(Measure.WEMWBS, score=47)
    assert improvement(Measure.WEMWBS, before, after) == 7


def test_less_lonely_is_a_positive_improvement() -> None:
    before, after = scored(Measure.UCLA3, [3, 3, 3]), scored(Measure.UCLA3, [2, 1, 2])
    assert improvement(Measure.UCLA3, before, after) == 4
    assert improvement(Measure.UCLA3, after, before) == -4


def test_more_activity_is_a_positive_improvement() -> None:
    before = scored(Measure.ACTIVITY_MINUTES, score=60)
    after = scored(Measure.ACTIVITY_MINUTES, score=150)
    assert improvement(Measure.ACTIVITY_MINUTES, before, after) == 90


def test_ons4_improvement_is_the_mean_item_change_with_anxiety_inverted() -> None:
    before, after = scored(Measure.ONS4, [5, 5, 5, 8]), scored(Measure.ONS4, [7, 6, 5, 4])
    assert item_improvements(before, after) == {
        "life_satisfaction": 2,
        "worthwhile": 1,
        "happy": 0,
        "anxious": 4,
    }
    assert improvement(Measure.ONS4, before, after) == 1.75


def test_only_more_anxiety_is_worse() -> None:
    before, after = scored(Measure.ONS4, [5, 5, 5, 2]), scored(Measure.ONS4, [5, 5, 5, 6])
    assert improvement(Measure.ONS4, before, after) == -1


def test_improvement_refuses_mixed_measures() -> None:
    with pytest.raises(MeasureError) as caught:
        improvement(
            Measure.WEMWBS, scored(Measure.UCLA3, [1, 1, 1]), scored(Measure.WEMWBS, [3] * 14)
        )
    assert caught.value.field == "baseline.measure"
    with pytest.raises(MeasureError):
        improvement(Measure.ONS4, scored(Measure.ONS4, [1] * 4), scored(Measure.UCLA3, [1, 1, 1]))
