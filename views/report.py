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
from schemas.events import FirstContactOverdue, ReferralEscalated
from schemas.measures import Measure, improvement, item_improvements, score_outcome
from services.refusal import Invalid
from views.bands import bands

ONE_TO_ONE_KINDS = ("longer-appointment", "short-conversation", "accompanied-visit", "other")


class MeasureChange(BaseModel):
    """How one outcome measure (or one ONS4 item, ``ons4.<item>``) moved between
    baseline and the latest later score.

    ``mean_baseline``/``mean_latest``/``mean_change`` are None where the measure has no
    single score (ONS4 as a whole: its items are never summed; see its item rows).
    """

    measure: str
    people: int
    improved: int
    percent_improved: float
    mean_baseline: float | None
    mean_latest: float | None
    mean_change: float | None
    mean_improvement: float


class BandChange(BaseModel):
    """Outcome change of the people whose *baseline* fell in one band of a measure
    (views/bands.py; docs/measures.md). None where nobody was in the band."""

    measure: str
    band: str
    baseline_range: str
    people: int
    improved: int
    percent_improved: float | None
    mean_change: float | None
    mean_improvement: float | None


class MonthFigures(BaseModel):
    """One calendar month in the alliance's zone (``YYYY-MM``)."""

    month: str
    referrals: int
    sessions: int
    one_to_one_hours: float


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
    outcome_changes_by_baseline_band: list[BandChange]
    monthly: list[MonthFigures]
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
        "SELECT count(*) FILTER (WHERE type = %(escalated)s), "
        "count(*) FILTER (WHERE type = %(overdue)s) FROM {s}.timeline WHERE {at}",
        schema,
        {
            **p,
            "escalated": ReferralEscalated.event_type,
            "overdue": FirstContactOverdue.event_type,
        },
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
    changes, by_band = await _outcome_changes(conn, schema, p)
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
        outcome_changes=changes,
        outcome_changes_by_baseline_band=by_band,
        monthly=await _monthly(conn, schema, p),
        median_days_to_first_contact=round(statistics.median(waits), 1) if waits else None,
        first_contact_sla_breaches=breaches,
    )


Point = tuple[float | None, float | None, float]  # baseline, latest, improvement


async def _outcome_changes(
    conn: AsyncConnection[Any], schema: str, p: dict[str, Any]
) -> tuple[list[MeasureChange], list[BandChange]]:
    """Per measure (and per ONS4 item), and per baseline band: people with a baseline
    and a later score recorded in range."""
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
    per_key: dict[str, list[Point]] = defaultdict(list)
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
        per_key[measure].append((before.score, after.score, improvement(m, before, after)))
        if m is Measure.ONS4:  # each item on its own scale: reported, never summed
            gains = item_improvements(before, after)
            assert before.per_item is not None and after.per_item is not None
            for item, gain in gains.items():
                b, a = before.per_item[item], after.per_item[item]
                per_key[f"ons4.{item}"].append((float(b), float(a), gain))
    changes = [_measure_change(key, values) for key, values in sorted(per_key.items())]
    return changes, _band_changes(per_key)


def _measure_change(key: str, values: list[Point]) -> MeasureChange:
    improved = sum(1 for _, _, gain in values if gain > 0)
    scored = [(b, a) for b, a, _ in values if b is not None and a is not None]
    return MeasureChange(
        measure=key,
        people=len(values),
        improved=improved,
        percent_improved=round(100 * improved / len(values), 1),
        mean_baseline=_mean([b for b, _ in scored]),
        mean_latest=_mean([a for _, a in scored]),
        mean_change=_mean([a - b for b, a in scored]),
        mean_improvement=round(statistics.fmean(g for _, _, g in values), 2),
    )


def _band_changes(per_key: dict[str, list[Point]]) -> list[BandChange]:
    """Every band of every measure seen, in the bands' order; empty bands say None."""
    out = []
    for key, measure_bands in bands().items():
        if key not in per_key:
            continue
        for band in measure_bands:
            values = [v for v in per_key[key] if v[0] is not None and band.holds(v[0])]
            improved = sum(1 for _, _, gain in values if gain > 0)
            out.append(
                BandChange(
                    measure=key,
                    band=band.name,
                    baseline_range=band.label,
                    people=len(values),
                    improved=improved,
                    percent_improved=round(100 * improved / len(values), 1) if values else None,
                    mean_change=_mean(
                        [a - b for b, a, _ in values if a is not None and b is not None]
                    ),
                    mean_improvement=_mean([g for _, _, g in values]),
                )
            )
    return out


async def _monthly(
    conn: AsyncConnection[Any], schema: str, p: dict[str, Any]
) -> list[MonthFigures]:
    """Referrals, sessions and one-to-one hours per month of the alliance's calendar,
    every month from the first to the last with any of them (gaps as zeros)."""
    month = "to_char({col} AT TIME ZONE %(zone)s, 'YYYY-MM')"
    referrals = dict(
        await _rows(
            conn,
            "SELECT " + month.format(col="referred_at") + ", count(*) FROM {s}.referrals "
            "WHERE {referred_at} GROUP BY 1",
            schema,
            p,
            "referred_at",
        )
    )
    sessions = {
        m: (n, minutes)
        for m, n, minutes in await _rows(
            conn,
            "SELECT " + month.format(col="held_at") + ", count(*), coalesce(sum(minutes) "
            "FILTER (WHERE kind = ANY(%(kinds)s)), 0)::bigint FROM {s}.sessions "
            "WHERE {held_at} GROUP BY 1",
            schema,
            {**p, "kinds": list(ONE_TO_ONE_KINDS)},
            "held_at",
        )
    }
    months = sorted({*referrals, *sessions})
    if not months:
        return []
    out = []
    year, mon = (int(x) for x in months[0].split("-"))
    while (key := f"{year:04d}-{mon:02d}") <= months[-1]:
        n, minutes = sessions.get(key, (0, 0))
        out.append(
            MonthFigures(
                month=key,
                referrals=referrals.get(key, 0),
                sessions=n,
                one_to_one_hours=round(minutes / 60, 1),
            )
        )
        year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return out


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _within(at: datetime, p: dict[str, Any]) -> bool:
    return (p["from"] is None or at >= p["from"]) and (p["to"] is None or at < p["to"])
