"""The first-contact SLA timer: flags referrals still waiting for first contact.

A breach found at first contact is recorded then (see ``casework.first_contact``). This
timer covers the referrals nobody has contacted at all. It fires only when the SLA has
passed both in the world's time and since outcomes learned of the routing, so loading a
year of history through the API never trips it for cases contacted moments later.
It runs in the outcomes worker only: replaying views never triggers it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from infra.local_time import alliance_zone
from services.outcomes.casework import (
    CASE_COLUMNS,
    CaseState,
    append_events,
    first_contact_due,
    overdue_model,
    sla_days,
)


async def flag_overdue(conn: AsyncConnection[Any], now: datetime, limit: int = 500) -> int:
    """Append ``first-contact-overdue`` for every case past its SLA; return how many."""
    # Days are added on the alliance's calendar, not the database session's TimeZone.
    params = {"days": sla_days(), "zone": alliance_zone().key, "now": now, "limit": limit}
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {CASE_COLUMNS} FROM outcomes.cases "
            "WHERE first_contact_at IS NULL AND closed_at IS NULL AND NOT overdue_flagged "
            "AND status IN ('routed', 'accepted') "
            "AND ((routed_at AT TIME ZONE %(zone)s) + make_interval(days => %(days)s)) "
            "AT TIME ZONE %(zone)s < %(now)s "
            "AND ((routed_seen_at AT TIME ZONE %(zone)s) + make_interval(days => %(days)s)) "
            "AT TIME ZONE %(zone)s < %(now)s "
            "ORDER BY routed_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
            params,
        )
        cases = [CaseState(**row) for row in await cur.fetchall()]
        for case in cases:
            due = first_contact_due(case)
            await append_events(conn, case, "outcomes", due, overdue_model(case, due))
            await cur.execute(
                "UPDATE outcomes.cases SET overdue_flagged = true WHERE referral_id = %s",
                (case.referral_id,),
            )
    return len(cases)
