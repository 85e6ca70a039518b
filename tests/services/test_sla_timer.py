"""The first-contact SLA timer flags only referrals really left waiting."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.outcomes import store as outcomes
from services.outcomes.sla import flag_overdue

pytestmark = pytest.mark.infra

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


async def _case(
    conn: Any, *, routed_days_ago: float, seen_days_ago: float, contacted: bool
) -> uuid.UUID:
    rid = uuid.uuid4()
    routed = NOW - timedelta(days=routed_days_ago)
    await conn.execute(
        "INSERT INTO outcomes.cases (referral_id, referrer_org, referred_at, service_org, status, "
        "routed_at, routed_seen_at, accepted_at, first_contact_at) "
        "VALUES (%s, 'gp', %s, 'lw', 'accepted', %s, %s, %s, %s)",
        (
            rid,
            routed,
            routed,
            NOW - timedelta(days=seen_days_ago),
            routed,
            routed if contacted else None,
        ),
    )
    return rid


async def _overdue_events(conn: Any, rid: uuid.UUID) -> list[tuple[str, datetime]]:
    cur = await conn.execute(
        "SELECT type, occurred_at FROM outcomes.events WHERE stream_id = %s", (rid,)
    )
    return list(await cur.fetchall())


async def test_flags_waiting_cases_once_and_leaves_the_rest(conn: Any) -> None:
    await outcomes.create(conn)
    waiting = await _case(conn, routed_days_ago=10, seen_days_ago=10, contacted=False)
    contacted = await _case(conn, routed_days_ago=10, seen_days_ago=10, contacted=True)
    recent = await _case(conn, routed_days_ago=2, seen_days_ago=2, contacted=False)
    # History loaded today: routed a year ago in the world, but outcomes only just saw it.
    loaded_today = await _case(conn, routed_days_ago=365, seen_days_ago=0.01, contacted=False)

    assert await flag_overdue(conn, NOW) >= 1
    assert await _overdue_events(conn, waiting) == [
        ("first-contact-overdue", NOW - timedelta(days=10) + timedelta(days=7))
    ]
    for rid in (contacted, recent, loaded_today):
        assert await _overdue_events(conn, rid) == []

    await flag_overdue(conn, NOW + timedelta(hours=1))  # flagged once, never again
    assert len(await _overdue_events(conn, waiting)) == 1
