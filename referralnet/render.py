"""Rich tables for the CLI: report, journey, tokens, partner views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table

from referralnet.journey import ChainBreak, Step
from views.report import Report


def tokens(console: Console, parsed: Any, new_tokens: dict[str, str]) -> None:
    table = Table(title=f"{parsed.alliance}: {len(parsed.organisations)} organisations")
    table.add_column("organisation")
    table.add_column("kind")
    table.add_column("token (shown once)")
    for org in parsed.organisations:
        table.add_row(org.id, org.kind.value, new_tokens.get(org.id, "(already registered)"))
    console.print(table)


def _pairs(title: str, pairs: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in pairs.items():
        table.add_row(str(key), str(value))
    return table


def report(console: Console, r: Report) -> None:
    span = f"{r.date_from or 'start'} to {r.date_to or 'now'}"
    console.print(
        _pairs(
            f"Alliance report ({span})",
            {
                "referrals": r.referrals,
                "people referred": r.people_referred,
                "people supported (had a session)": r.people_supported,
                "declines / escalations": f"{r.declines} / {r.escalations}",
                "sessions": r.sessions,
                "hours of one-to-one time": r.one_to_one_hours,
                "onward activities": sum(r.activities_by_kind.values()),
                "activity attendances": r.attendances,
                "median days referral to first contact": _or_dash(
                    r.median_days_to_first_contact, "{}"
                ),
                "first-contact SLA breaches": r.first_contact_sla_breaches,
            },
        )
    )
    console.print(_pairs("Referrals by source", r.referrals_by_source_kind))
    console.print(_pairs("Sessions by kind", r.sessions_by_kind))
    console.print(_pairs("Onward activities by kind", r.activities_by_kind))
    table = Table(title="Outcome change, baseline to latest", title_justify="left")
    cols = (
        "measure",
        "people",
        "% improved",
        "mean baseline",
        "mean latest",
        "mean change",
        "mean improvement",
    )
    for col in cols:
        table.add_column(col, justify="right" if col != "measure" else "left")
    for c in r.outcome_changes:
        table.add_row(
            c.measure,
            str(c.people),
            f"{c.percent_improved:.1f}",
            _or_dash(c.mean_baseline, "{}"),
            _or_dash(c.mean_latest, "{}"),
            _or_dash(c.mean_change, "{:+.2f}"),
            f"{c.mean_improvement:+.2f}",
        )
    console.print(table)
    bands = Table(title="Outcome change by baseline band", title_justify="left")
    for col in ("measure", "baseline band", "range", "people", "% improved", "mean change"):
        bands.add_column(col, justify="left" if col in ("measure", "baseline band") else "right")
    for b in r.outcome_changes_by_baseline_band:
        bands.add_row(
            b.measure,
            b.band,
            b.baseline_range,
            str(b.people),
            _or_dash(b.percent_improved, "{:.1f}"),
            _or_dash(b.mean_change, "{:+.2f}"),
        )
    console.print(bands)
    monthly = Table(title="By month", title_justify="left")
    for col in ("month", "referrals", "sessions", "one-to-one hours"):
        monthly.add_column(col, justify="left" if col == "month" else "right")
    for m in r.monthly:
        monthly.add_row(m.month, str(m.referrals), str(m.sessions), f"{m.one_to_one_hours:.1f}")
    console.print(monthly)


def _or_dash(value: float | None, form: str) -> str:
    """A figure, or "-" where there is none (never a made-up +0.00)."""
    return "-" if value is None else form.format(value)


def journey(
    console: Console, rid: UUID, steps: Sequence[Step], breaks: list[ChainBreak] | None
) -> None:
    table = Table(title=f"Journey of referral {rid}", title_justify="left")
    for col in ("time", "event", "actor", "service", "v", "summary"):
        table.add_column(col)
    for s in steps:
        table.add_row(
            s.event.occurred_at.strftime("%Y-%m-%d %H:%M"),
            s.event.type,
            s.event.actor,
            s.service,
            str(s.event.version),
            s.summary,
        )
    console.print(table)
    if breaks is None:
        return
    if not breaks:
        console.print("[green]verified[/]: every store's hash chain for this referral is intact")
    for b in breaks:
        console.print(f"[red]TAMPERED[/]: {b.service} stream version {b.version}: {b.problem}")


def partner_views(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="What each partner's own view holds", title_justify="left")
    for col in (
        "partner",
        "kind",
        "referrals",
        "closed",
        "sessions",
        "activities",
        "attendances",
        "outcomes",
    ):
        table.add_column(col, justify="left" if col in ("partner", "kind") else "right")
    for r in rows:
        table.add_row(
            r["org"],
            r["kind"],
            *(
                str(r.get(k, 0))
                for k in (
                    "referrals",
                    "closed",
                    "sessions",
                    "activities",
                    "attendances",
                    "outcomes",
                )
            ),
        )
    console.print(table)
