"""The text report prints no figure where none exists (ONS4 has no single score)."""

from __future__ import annotations

import io

from rich.console import Console

from referralnet import render
from views.report import BandChange, MeasureChange, MonthFigures, Report


def test_ons4_prints_dashes_not_zero_and_bands_and_months_are_shown() -> None:
    report = Report(
        date_from=None, date_to=None, referrals=1, people_referred=1, people_supported=1,
        referrals_by_source_kind={}, referrals_by_status={}, declines=0, escalations=0,
        sessions=0, sessions_by_kind={}, one_to_one_hours=0.0, activities_by_kind={},
        attendances=0,
        outcome_changes=[
            MeasureChange(measure="ons4", people=1, improved=1, percent_improved=100.0,
                          mean_baseline=None, mean_latest=None, mean_change=None,
                          mean_improvement=1.5),
        ],
        outcome_changes_by_baseline_band=[
            BandChange(measure="ucla3", band="most-severely-lonely", baseline_range="9",
                       people=2, improved=2, percent_improved=100.0, mean_change=-1.5,
                       mean_improvement=1.5),
            BandChange(measure="ucla3", band="not-often-lonely", baseline_range="3-5",
                       people=0, improved=0, percent_improved=None, mean_change=None,
                       mean_improvement=None),
        ],
        monthly=[MonthFigures(month="2026-07", referrals=1, sessions=0, one_to_one_hours=0.0)],
        median_days_to_first_contact=None, first_contact_sla_breaches=0,
    )  # fmt: skip
    console = Console(width=200, record=True, file=io.StringIO())
    render.report(console, report)
    text = console.export_text()
    ons4 = next(line for line in text.splitlines() if "│ ons4 " in line)
    assert "+0.00" not in ons4 and ons4.count("-") >= 3
    assert "most-severely-lonely" in text and "100.0" in text
    assert "2026-07" in text
    assert "None" not in text  # no median without first contacts: "-"
