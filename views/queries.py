"""Reads of one organisation's view: plain SQL over tables built for reading."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from domain.lifecycle import Status
from views.schema import schema_name

PROVIDERS = "ARRAY(SELECT a.provider_org FROM {s}.activities a WHERE a.referral_id = r.referral_id)"
"""The providers of the referral's activities: one input of the entitlement policy
(``views.entitlement``), which decides the caller's role in Python, not in SQL."""

COLUMNS = (
    "r.referral_id, r.person_ref, r.referrer_org, r.referrer_kind, r.service_org, r.needs, "
    "r.urgency, r.area, r.age_band, r.status, r.referred_at, r.routed_at, r.accepted_at, "
    "r.first_contact_at, r.overdue, r.closed_at, r.close_reason, r.declines, r.sessions, "
    "r.session_minutes, r.activities, r.attendances, r.outcomes, r.last_event_at"
)


COLUMN_NAMES = tuple(c.strip().removeprefix("r.") for c in COLUMNS.split(","))
"""The keys of a view row, in ``COLUMNS`` order."""


async def totals(conn: AsyncConnection[Any], org_id: str) -> dict[str, Any]:
    """Headline counts of a view (what the demo prints per partner)."""
    s = sql.Identifier(schema_name(org_id))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT count(*) AS referrals, "
                "count(*) FILTER (WHERE status = %s) AS closed, "
                "coalesce(sum(sessions), 0)::int AS sessions, "
                "coalesce(sum(activities), 0)::int AS activities, "
                "coalesce(sum(attendances), 0)::int AS attendances, "
                "coalesce(sum(outcomes), 0)::int AS outcomes FROM {}.referrals"
            ).format(s),
            (Status.CLOSED.value,),
        )
        row = await cur.fetchone()
    return dict(row or {})


async def referrals(
    conn: AsyncConnection[Any],
    org_id: str,
    *,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Referrals in the view, newest first, each with ``providers`` (for the policy)."""
    s = sql.Identifier(schema_name(org_id))
    query = sql.SQL(
        "SELECT " + COLUMNS + ", " + PROVIDERS + " AS providers FROM {s}.referrals r "
        "WHERE (%(status)s::text IS NULL OR r.status = %(status)s) "
        "ORDER BY r.referred_at DESC, r.referral_id LIMIT %(limit)s OFFSET %(offset)s"
    ).format(s=s)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {"status": status, "limit": limit, "offset": offset})
        return list(await cur.fetchall())


async def referral(
    conn: AsyncConnection[Any], org_id: str, referral_id: UUID
) -> dict[str, Any] | None:
    """One referral as the caller's view holds it; ``details`` lists its sessions,
    activities, outcomes and timeline."""
    s = sql.Identifier(schema_name(org_id))
    params = {"id": referral_id}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT " + COLUMNS + ", " + PROVIDERS + " AS providers "
                "FROM {s}.referrals r WHERE r.referral_id = %(id)s"
            ).format(s=s),
            params,
        )
        row = await cur.fetchone()
        if row is None:
            return None
        details: dict[str, list[dict[str, Any]]] = {}
        for table, order in (
            ("sessions", "held_at"),
            ("activities", "referred_at"),
            ("outcomes", "recorded_at"),
            ("timeline", "at"),
        ):
            await cur.execute(
                sql.SQL("SELECT * FROM {}.{} WHERE referral_id = %(id)s ORDER BY {}").format(
                    s, sql.Identifier(table), sql.Identifier(order)
                ),
                params,
            )
            details[table] = [
                {k: v for k, v in r.items() if k != "referral_id"} for r in await cur.fetchall()
            ]
    return {**row, "details": details}
