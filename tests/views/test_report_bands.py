"""Reports commissioners ask for: change by baseline band, ONS4 per item, months.

Hand-computed values next to each assertion; the scenario goes through the real
consumer path into a view schema (see test_report.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.views.test_report import Scenario, _apply, created, outcome, session
from views.report import build_report

pytestmark = pytest.mark.infra

P1, P2, P3 = (uuid.UUID(int=0x100 + i) for i in range(3))


def scenario() -> Scenario:
    s = Scenario()
    created(s, P1, "01-10", "gp-practice", "gp", "p_one")
    created(s, P2, "03-10", "gp-practice", "gp", "p_two")
    created(s, P3, "03-11", "fire-service", "fire", "p_three")
    # UCLA-3: two most severely lonely (9) both improve; one lonely (6) does not.
    outcome(s, P1, "03-12", "ucla3", "baseline", items=[3, 3, 3], score=9)
    outcome(s, P1, "05-12", "ucla3", "follow-up", items=[3, 2, 2], score=7)
    outcome(s, P2, "03-12", "ucla3", "baseline", items=[3, 3, 3], score=9)
    outcome(s, P2, "05-12", "ucla3", "follow-up", items=[3, 3, 2], score=8)
    outcome(s, P3, "03-12", "ucla3", "baseline", items=[2, 2, 2], score=6)
    outcome(s, P3, "05-12", "ucla3", "follow-up", items=[2, 2, 2], score=6)
    # ONS4, one person: life 4->6 (low), worthwhile 6->6 (medium), happy 7->8 (high),
    # anxious 6->3 (high anxiety, better by 3).
    outcome(s, P1, "03-12", "ons4", "baseline", items=[4, 6, 7, 6], score=None)
    outcome(s, P1, "05-12", "ons4", "follow-up", items=[6, 6, 8, 3], score=None)
    # Activity: inactive 20 -> 90 minutes a week.
    outcome(s, P2, "03-12", "activity-minutes", "baseline", score=20)
    outcome(s, P2, "05-12", "activity-minutes", "follow-up", score=90)
    # Sessions: one at 00:30 BST on 1 July (23:30 UTC on 30 June) is July's.
    s.add(
        P1, "outcomes", "lw", "06-30", "session-held", session_id=str(uuid.uuid4()),
        kind="longer-appointment", duration_minutes=60, mode="in-person",
        held_at="2025-06-30T23:30:00+00:00",
    )  # fmt: skip
    session(s, P2, "07-02", "group", 90)  # not one-to-one time
    return s


def band(r: Any, measure: str, name: str) -> Any:
    (found,) = [
        b for b in r.outcome_changes_by_baseline_band if (b.measure, b.band) == (measure, name)
    ]
    return found


async def test_change_by_baseline_band(conn: Any) -> None:
    schema = f"view_bands_{uuid.uuid4().hex[:8]}"
    await _apply(conn, schema, scenario().events)
    r = await build_report(conn, schema)

    severe = band(r, "ucla3", "most-severely-lonely")
    assert (severe.baseline_range, severe.people, severe.improved) == ("9", 2, 2)
    assert severe.percent_improved == 100.0  # "100% of the most severely lonely improved"
    assert severe.mean_change == -1.5  # (7 - 9 + 8 - 9) / 2
    lonely = band(r, "ucla3", "lonely")
    assert (lonely.baseline_range, lonely.people, lonely.improved) == ("6-9", 3, 2)
    assert lonely.percent_improved == 66.7
    calm = band(r, "ucla3", "not-often-lonely")
    assert (calm.people, calm.percent_improved, calm.mean_change) == (0, None, None)

    assert band(r, "ons4.life_satisfaction", "low").mean_change == 2.0
    assert band(r, "ons4.worthwhile", "medium").improved == 0
    assert band(r, "ons4.happy", "high").mean_change == 1.0
    anxious = band(r, "ons4.anxious", "high")
    assert (anxious.baseline_range, anxious.improved, anxious.mean_change) == ("6-10", 1, -3.0)
    assert anxious.mean_improvement == 3.0
    inactive = band(r, "activity-minutes", "inactive")
    assert (inactive.baseline_range, inactive.people, inactive.mean_change) == ("< 30", 1, 70.0)
    assert {b.measure for b in r.outcome_changes_by_baseline_band} == {
        "ucla3", "ons4.life_satisfaction", "ons4.worthwhile", "ons4.happy", "ons4.anxious",
        "activity-minutes",
    }  # fmt: skip


async def test_ons4_is_reported_per_item_with_no_made_up_single_score(conn: Any) -> None:
    schema = f"view_bands_{uuid.uuid4().hex[:8]}"
    await _apply(conn, schema, scenario().events)
    changes = {c.measure: c for c in (await build_report(conn, schema)).outcome_changes}
    whole = changes["ons4"]
    assert (whole.mean_baseline, whole.mean_latest, whole.mean_change) == (None, None, None)
    assert whole.mean_improvement == 1.5  # (2 + 0 + 1 + 3) / 4, anxiety negated
    items = {k: (c.mean_baseline, c.mean_latest, c.mean_change) for k, c in changes.items()}
    assert items["ons4.life_satisfaction"] == (4.0, 6.0, 2.0)
    assert items["ons4.worthwhile"] == (6.0, 6.0, 0.0)
    assert items["ons4.happy"] == (7.0, 8.0, 1.0)
    assert items["ons4.anxious"] == (6.0, 3.0, -3.0)
    assert changes["ons4.anxious"].improved == 1


async def test_months_on_the_alliance_calendar_with_gaps_as_zeros(conn: Any) -> None:
    schema = f"view_bands_{uuid.uuid4().hex[:8]}"
    await _apply(conn, schema, scenario().events)
    r = await build_report(conn, schema)
    months = {m.month: (m.referrals, m.sessions, m.one_to_one_hours) for m in r.monthly}
    assert list(months) == [f"2025-{m:02d}" for m in range(1, 8)]
    assert months["2025-01"] == (1, 0, 0.0)
    assert months["2025-02"] == (0, 0, 0.0)
    assert months["2025-03"] == (2, 0, 0.0)
    assert months["2025-06"] == (0, 0, 0.0)  # 23:30 UTC on 30 June is July in London
    assert months["2025-07"] == (0, 2, 1.0)  # the group session is not one-to-one time
    assert sum(m.sessions for m in r.monthly) == r.sessions
    assert sum(m.referrals for m in r.monthly) == r.referrals
