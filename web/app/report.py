"""The commissioner's alliance report: charts, the same numbers in tables, and CSV.

Every figure is ``GET /report``'s (the commissioner's own aggregate view). Sessions by
kind *per month* is ``GET /report`` asked once per month of the range, so no query of
the report is written again here.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from web.app import charts
from web.app.client import Answer
from web.app.pages import Page, PageOf

router = APIRouter()

MAX_MONTHS = 24
"""Months charted per kind of session (one ``GET /report`` each)."""


def _next_month(month: str) -> str:
    year, mon = (int(x) for x in month.split("-"))
    return date(year + mon // 12, mon % 12 + 1, 1).isoformat()


async def _report(page: Page, date_from: str | None, date_to: str | None) -> Answer:
    return page.checked(await page.api.get("/report", **{"from": date_from, "to": date_to}))


async def sessions_by_kind_per_month(
    page: Page, report: dict[str, Any], date_from: str | None, date_to: str | None
) -> tuple[list[str], dict[str, list[float]]]:
    """Months of the report with sessions -> sessions by kind in each (``GET /report``
    for that month, clipped to the asked range)."""
    months = [m["month"] for m in report["monthly"] if m["sessions"]][-MAX_MONTHS:]
    gate = asyncio.Semaphore(4)  # well inside the organisation's in-flight quota

    async def one(month: str) -> dict[str, int]:
        start = max(f"{month}-01", date_from) if date_from else f"{month}-01"
        end = min(_next_month(month), date_to) if date_to else _next_month(month)
        async with gate:
            answer = await _report(page, start, end)
        return dict(answer.body.get("sessions_by_kind", {})) if answer.ok else {}

    per_month = await asyncio.gather(*(one(m) for m in months))
    kinds = sorted({k for figures in per_month for k in figures})
    return months, {k: [float(f.get(k, 0)) for f in per_month] for k in kinds}


@router.get("/report")
async def report_page(
    page: PageOf,
    date_from: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    date_to: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> Response:
    date_from, date_to = date_from or None, date_to or None
    answer = await _report(page, date_from, date_to)
    values = {"from": date_from or "", "to": date_to or ""}
    if not answer.ok:
        return page.render(
            "report.html",
            answer.status,
            title="Alliance report",
            report=None,
            values=values,
            errors=answer.fields or {"form": answer.reason},
        )
    report = answer.body
    months, by_kind = await sessions_by_kind_per_month(page, report, date_from, date_to)
    changes = report["outcome_changes"]
    figures = {
        "sessions": charts.stacked_bars(
            "Sessions by kind per month",
            months,
            by_kind,
            "Stacked bar chart of link-worker sessions by kind for each month; "
            "the numbers are in the table below.",
        ),
        "sources": charts.bars(
            "Referrals by source kind",
            {k: float(v) for k, v in report["referrals_by_source_kind"].items()},
            "Bar chart of referrals by the kind of organisation that referred; "
            "the numbers are in the table below.",
        ),
        "outcomes": charts.horizontal_bars(
            "Mean change per outcome measure (follow-up minus baseline)",
            {c["measure"]: c["mean_change"] for c in changes},
            "Bar chart of the mean change in each outcome measure; "
            "the numbers are in the table below.",
        ),
        "bands": charts.horizontal_bars(
            "Mean improvement by measure and baseline band",
            {
                f"{b['measure']} {b['band']}": b["mean_improvement"]
                for b in report["outcome_changes_by_baseline_band"]
            },
            "Bar chart of the mean improvement per measure for each baseline band; "
            "the numbers are in the table below.",
        ),
    }
    return page.render(
        "report.html",
        title="Alliance report",
        report=report,
        months=months,
        by_kind=by_kind,
        figures=figures,
        values=values,
        errors={},
    )


@router.get("/report.csv")
async def report_csv(
    page: PageOf,
    date_from: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    date_to: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> Response:
    """The report's figures as ``section,key,value`` rows (a spreadsheet's input)."""
    date_from, date_to = date_from or None, date_to or None
    answer = await _report(page, date_from, date_to)
    if not answer.ok:
        return Response(answer.reason, status_code=answer.status, media_type="text/plain")
    report = answer.body
    months, by_kind = await sessions_by_kind_per_month(page, report, date_from, date_to)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["section", "key", "value"])
    for key in (
        "referrals",
        "people_referred",
        "people_supported",
        "declines",
        "escalations",
        "sessions",
        "one_to_one_hours",
        "attendances",
        "median_days_to_first_contact",
        "first_contact_sla_breaches",
    ):
        writer.writerow(["totals", key, report.get(key)])
    for section in ("referrals_by_source_kind", "referrals_by_status", "sessions_by_kind"):
        for key, value in report[section].items():
            writer.writerow([section, key, value])
    for kind, counts in by_kind.items():
        for month, count in zip(months, counts, strict=True):
            writer.writerow(["sessions_by_kind_per_month", f"{month} {kind}", int(count)])
    for change in report["outcome_changes"]:
        for key in ("people", "improved", "percent_improved", "mean_baseline", "mean_change"):
            writer.writerow(["outcome_change", f"{change['measure']} {key}", change[key]])
    for band in report["outcome_changes_by_baseline_band"]:
        for key in ("people", "improved", "mean_improvement"):
            writer.writerow(
                ["outcome_change_by_band", f"{band['measure']} {band['band']} {key}", band[key]]
            )
    name = f"alliance-report-{date_from or 'start'}-{date_to or 'now'}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
