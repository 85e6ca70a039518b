"""The alliance report (DOMAIN: what alliances report), computed from one view schema.

Run over a commissioner's view it uses only pseudonymous rows and returns aggregates;
``referralnet report`` and ``GET /report`` call the same function (and parse their range
with the same ``report_range``), so they agree whatever the server's ``TZ``. Dates are
read on the alliance's calendar (``infra.local_time``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection, sql
from pydantic import BaseModel

from infra.local_time import NotADate, alliance_zone, parse_instant
from schemas.measures import Measure, improvement, score_outcome
from services.refusal import Invalid

ONE_TO_ONE_KINDS = ("longer-appointment", "short-conversation", "accompanied-visit", "other")


class MeasureChange(BaseModel):
    """How one outcome measure moved between baseline and the latest later score."""

    measure: str
    people: int
    improved: int
    percent_improved: float
    mean_baseline: float | None
    mean_latest: float | None
    mean_change: float
    mean_improvement: float


class Report(BaseModel):
    """Every figure a commissioner asks for, for one date range."""

    date_from: datetime | None
    date_to: datetime | None
    referrals: int
    people_referred: int
    people_supported: int
    referrals_by_source_kind: dict[str, int]
    referrals_by_status: dict[str, int]
    declines: int
    escalations: int
    sessions: int
    sessions_by_kind: dict[str, int]
    one_to_one_hours: float
    activities_by_kind: dict[str, int]
    attendances: int
    outcome_changes: list[MeasureChange]
    median_days_to_first_contact: float | None
    first_contact_sla_breaches: int


RANGE_DESCRIPTION = (
    "ISO 8601 date or date-time. A date (2026-07-01) means the start of that day and a "
    "date-time without an offset (2026-07-01T09:30) means wall-clock time, both in the "
    "alliance's time zone (setting REFERRALNET_TIMEZONE, default Europe/London; BST or GMT "
    "as in force on that date). With an offset or Z it is that instant. `from` is "
    "inclusive, `to` exclusive; from must be before to. Bare numbers are refused."
)


def report_range(
    date_from: str | None, date_to: str | None, zone: ZoneInfo | None = None
) -> tuple[datetime | None, datetime | None]:
    """Parse the report's ``from``/``to`` text into aware instants (see ``RANGE_DESCRIPTION``).

    Raises ``Invalid`` naming the field (``from`` or ``to``) for text that is not a date
    and for a range that is empty or backwards.
    """
    zone = zone or alliance_zone()
    bounds: dict[str, datetime | None] = {}
    for name, text in (("from", date_from), ("to", date_to)):
        try:
            bounds[name] = None if text is None else parse_instant(text, zone)
        except NotADate as exc:
            raise Invalid(str(exc), field=name) from None
    start, end = bounds["from"], bounds["to"]
    if start is not None and end is not None and start >= end:
        raise Invalid(f"must be after from ({date_from}); the range is empty", field="to")
    return start, end


def _in_range(column: str) -> sql.Composable:
    return sql.SQL(
        "({col} >= %(from)s OR %(from)s::timestamptz IS NULL) AND "
        "({col} < %(to)s OR %(to)s::timestamptz IS NULL)"
    ).format(col=sql.SQL(column))


async def _rows(
    conn: AsyncConnection[Any], query: str, schema: str, params: dict[str, Any], *cols: str
) -> list[tuple[Any, ...]]:
    composed = sql.SQL(query).format(s=sql.Identifier(schema), **{c: _in_range(c) for c in cols})
    cur = await conn.execute(composed, params)
    return await cur.fetchall()


async def build_report(
    conn: AsyncConnection[Any],
    schema: str,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    zone: ZoneInfo | None = None,
) -> Report:
    """Compute the report from ``schema`` for referrals/sessions/... within the range.

    ``date_from`` (inclusive) and ``date_to`` (exclusive) are instants; a naive one is
    read as the alliance's wall-clock time. ``zone`` defaults to the alliance setting.
    """
    zone = zone or alliance_zone()
    date_from, date_to = (
        None if d is None else d if d.tzinfo is not None else d.replace(tzinfo=zone)
        for d in (date_from, date_to)
    )
    p = {"from": date_from, "to": date_to, "zone": zone.key}
    by_kind = dict(
        await _rows(
            conn,
            "SELECT referrer_kind, count(*) FROM {s}.referrals WHERE {referred_at} "
            "GROUP BY 1 ORDER BY 1",
            schema,
            p,
            "referred_at",
        )
    )
    by_status = dict(
        await _rows(
            conn,
            "SELECT status, count(*) FROM {s}.referrals WHERE {referred_at} GROUP BY 1 ORDER BY 1",
            schema,
            p,
            "referred_at",
        )
    )
    ((people_referred, declines),) = await _rows(
        conn,
        "SELECT count(DISTINCT person_ref), coalesce(sum(declines), 0)::int FROM {s}.referrals "
        "WHERE {referred_at}",
        schema,
        p,
        "referred_at",
    )
    sessions = dict(
        await _rows(
            conn,
            "SELECT kind, count(*) FROM {s}.sessions WHERE {held_at} GROUP BY 1 ORDER BY 1",
            schema,
            p,
            "held_at",
        )
    )
    ((minutes, supported),) = await _rows(
        conn,
        "SELECT coalesce(sum(minutes) FILTER (WHERE kind = ANY(%(kinds)s)), 0)::bigint, "
        "count(DISTINCT r.person_ref) FROM {s}.sessions s JOIN {s}.referrals r "
        "USING (referral_id) WHERE {held_at}",
        schema,
        {**p, "kinds": list(ONE_TO_ONE_KINDS)},
        "held_at",
    )
    activities = dict(
        await _rows(
            conn,
            "SELECT activity_kind, count(*) FROM {s}.activities WHERE {referred_at} "
            "GROUP BY 1 ORDER BY 1",
            schema,
            p,
            "referred_at",
        )
    )
    ((attended_sum,),) = await _rows(
        conn,
        "SELECT coalesce(sum(attended), 0)::int FROM {s}.activities WHERE {referred_at}",
        schema,
        p,
        "referred_at",
    )
    ((escalations, breaches),) = await _rows(
        conn,
        "SELECT count(*) FILTER (WHERE type = 'referral-escalated'), "
        "count(*) FILTER (WHERE type = 'first-contact-overdue') FROM {s}.timeline WHERE {at}",
        schema,
        p,
        "at",
    )
    waits = [
        float(d)
        for (d,) in await _rows(
            conn,
            # Wall-clock days in the alliance's zone: 09:00 to 09:00 a week later is 7.0
            # days even when the clocks changed in between.
            "SELECT extract(epoch FROM (first_contact_at AT TIME ZONE %(zone)s) - "
            "(referred_at AT TIME ZONE %(zone)s)) / 86400 "
            "FROM {s}.referrals WHERE first_contact_at IS NOT NULL AND {first_contact_at}",
            schema,
            p,
            "first_contact_at",
        )
    ]
    return Report(
        date_from=date_from,
        date_to=date_to,
        referrals=sum(by_kind.values()),
        people_referred=people_referred,
        people_supported=supported,
        referrals_by_source_kind=by_kind,
        referrals_by_status=by_status,
        declines=declines,
        escalations=escalations,
        sessions=sum(sessions.values()),
        sessions_by_kind=sessions,
        one_to_one_hours=round(minutes / 60, 1),
        activities_by_kind=activities,
        attendances=attended_sum,
        outcome_changes=await _outcome_changes(conn, schema, p),
        median_days_to_first_contact=round(statistics.median(waits), 1) if waits else None,
        first_contact_sla_breaches=breaches,
    )


async def _outcome_changes(
    conn: AsyncConnection[Any], schema: str, p: dict[str, Any]
) -> list[MeasureChange]:
    """Per measure: people with a baseline and a later score recorded in range."""
    rows = await _rows(
        conn,
        "SELECT referral_id, measure, timepoint, score, items, recorded_at FROM {s}.outcomes "
        "ORDER BY referral_id, measure, recorded_at",
        schema,
        p,
    )
    series: dict[tuple[Any, str], list[tuple[str, float | None, Any, datetime]]] = defaultdict(list)
    for rid, measure, timepoint, score, items, at in rows:
        series[(rid, measure)].append((timepoint, score, items, at))
    per_measure: dict[str, list[tuple[float | None, float | None, float]]] = defaultdict(list)
    for (_rid, measure), points in series.items():
        baseline = next((pt for pt in points if pt[0] == "baseline"), None)
        later = [pt for pt in points if pt[0] != "baseline" and baseline and pt[3] >= baseline[3]]
        if baseline is None or not later:
            continue
        latest = later[-1]
        if not _within(latest[3], p):
            continue
        m = Measure(measure)
        before = score_outcome(m, baseline[2], baseline[1])
        after = score_outcome(m, latest[2], latest[1])
        per_measure[measure].append((before.score, after.score, improvement(m, before, after)))
    changes = []
    for measure, values in sorted(per_measure.items()):
        improved = sum(1 for _, _, gain in values if gain > 0)
        scored = [(b, a) for b, a, _ in values if b is not None and a is not None]
        changes.append(
            MeasureChange(
                measure=measure,
                people=len(values),
                improved=improved,
                percent_improved=round(100 * improved / len(values), 1),
                mean_baseline=_mean([b for b, _ in scored]),
                mean_latest=_mean([a for _, a in scored]),
                mean_change=_mean([a - b for b, a in scored]) or 0.0,
                mean_improvement=round(statistics.fmean(g for _, _, g in values), 2),
            )
        )
    return changes


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _within(at: datetime, p: dict[str, Any]) -> bool:
    return (p["from"] is None or at >= p["from"]) and (p["to"] is None or at < p["to"])
