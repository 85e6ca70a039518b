"""Each view row is the referral's lifecycle (domain.lifecycle) folded over what the view
received, on the real database: status, holder, milestones and counters, whatever the
batch size; the status filter and totals read the same statuses."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from psycopg import sql

from domain.lifecycle import NEW, Referral, Status, apply, as_event
from schemas.envelope import CloudEvent
from schemas.registry import decode, parse_dataschema
from tests.views.test_report import Scenario, _apply, created, scenario, session
from views import queries
from views.schema import schema_name

pytestmark = pytest.mark.infra


D, E = uuid.UUID(int=0xD), uuid.UUID(int=0xE)


def events() -> list[CloudEvent]:
    """The report's scenario, plus sessions whose status depends on the stored one."""
    s: Scenario = scenario()
    # D: a session right after acceptance moves it on (no first contact recorded)
    created(s, D, "03-01", "gp-practice", "gp", "p_delta")
    s.add(
        D, "routing", "routing", "03-01", "referral-routed", service_org="lw", attempt=1, reason="x"
    )
    s.add(
        D, "routing", "lw", "03-02", "referral-accepted", service_org="lw",
        accepted_at=t_iso("03-02"),
    )  # fmt: skip
    session(s, D, "03-03", "longer-appointment", 45)
    # E: a session while only routed leaves it routed
    created(s, E, "03-01", "gp-practice", "gp", "p_echo")
    s.add(
        E, "routing", "routing", "03-01", "referral-routed", service_org="lw", attempt=1, reason="x"
    )
    session(s, E, "03-04", "short-conversation", 10)
    return s.events


def t_iso(day: str) -> str:
    return f"2025-{day}T09:00:00+00:00"


def folded() -> dict[uuid.UUID, Referral]:
    """The lifecycle of each referral, at the envelopes' times."""
    states: dict[uuid.UUID, Referral] = {}
    for event in events():
        rid = uuid.UUID(event.subject)
        model = as_event(decode(event.type, parse_dataschema(event.dataschema)[1], event.data))
        states[rid] = apply(states.get(rid, NEW), model, at=event.time)
    return states


def expected_row(state: Referral) -> dict[str, Any]:
    return {
        "status": str(state.status),
        "service_org": state.parties.service_org,
        "routed_at": state.routed_at,
        "accepted_at": state.accepted_at,
        "first_contact_at": state.first_contact_at,
        "closed_at": state.closed_at,
        "close_reason": state.close_reason and state.close_reason.value,
        "overdue": state.overdue,
        "declines": state.declines,
        "sessions": state.sessions,
        "session_minutes": state.minutes,
        "activities": state.activities,
        "attendances": state.attendances,
        "outcomes": state.outcomes,
        "last_event_at": state.last_event_at,
    }


@pytest.mark.parametrize("batch_size", [1, 4, 0])
async def test_rows_are_the_lifecycle_fold(conn: Any, batch_size: int) -> None:
    org = f"lifecycle-{uuid.uuid4().hex[:8]}"
    schema = schema_name(org)
    try:
        await _apply(conn, schema, events(), batch_size=batch_size)
        columns = list(expected_row(NEW))
        cur = await conn.execute(
            sql.SQL("SELECT referral_id, {} FROM {}.referrals").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema)
            )
        )
        rows = {r[0]: dict(zip(columns, r[1:], strict=True)) for r in await cur.fetchall()}
        states = folded()
        assert (states[D].status, states[E].status) == (Status.IN_PROGRESS, Status.ROUTED)
        assert rows == {rid: expected_row(state) for rid, state in states.items()}
        statuses = {state.status for state in states.values()}
        assert len(statuses) > 1, "the scenario should leave referrals in several statuses"
        for status in Status:
            got = await queries.referrals(conn, org, status=status.value)
            want = {rid for rid, state in states.items() if state.status is status}
            assert {r["referral_id"] for r in got} == want, status
        totals = await queries.totals(conn, org)
        assert totals["closed"] == sum(s.closed for s in states.values())
        assert totals["sessions"] == sum(s.sessions for s in states.values())
    finally:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
