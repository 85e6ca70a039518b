"""Outcomes' HTTP routes: casework by the routed service, attendance by providers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from directory import store as directory
from directory.model import SLUG
from eventstore.records import StoredEvent
from services.existence import known_to_intake, routing_holder
from services.outcomes import casework
from services.outcomes.requests import (
    ActivityReferral,
    Assessment,
    AssessmentRecorded,
    Attendance,
    Closing,
    FirstContact,
    OutcomeRecord,
    Recorded,
    SessionHeld,
)
from services.refusal import NotFound, NotYet
from web.deps import Caller, Conn, Pool
from web.errors import ERROR_RESPONSES

router = APIRouter(tags=["outcomes"])


def _recorded(event: StoredEvent) -> Recorded:
    session_id = event.data.get("session_id")
    score = event.data.get("score")
    return Recorded(
        referral_id=event.stream_id,
        event_id=event.event_id,
        type=event.type,
        stream_version=event.version,
        session_id=UUID(session_id) if session_id else None,
        score=score if isinstance(score, int | float) else None,
    )


Act = Callable[[AsyncConnection[Any], casework.CaseState], Awaitable[list[StoredEvent]]]


def _one(
    act: Callable[[AsyncConnection[Any], casework.CaseState], Awaitable[StoredEvent]],
) -> Act:
    async def many(conn: AsyncConnection[Any], case: casework.CaseState) -> list[StoredEvent]:
        return [await act(conn, case)]

    return many


async def _peek(conn: AsyncConnection[Any], referral_id: UUID) -> casework.CaseState | None:
    """The case as outcomes knows it now (no lock, no transaction)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {casework.CASE_COLUMNS} FROM outcomes.cases WHERE referral_id = %s",
            (referral_id,),
        )
        row = await cur.fetchone()
    return casework.CaseState(**row) if row else None


def _may_still_become_yours(case: casework.CaseState, org_id: str) -> bool:
    """Routing's answer may still be on its way to outcomes: the case is neither yours
    and accepted (ready), nor settled (closed, escalated, accepted by another service)."""
    ready = case.service_org == org_id and case.status in ("accepted", "closed")
    settled = case.status in ("closed", "escalated") or (
        case.status == "accepted" and case.service_org != org_id
    )
    return not (ready or settled)


async def _as_holder(db: Pool, referral_id: UUID, org_id: str, act: Act) -> list[Recorded]:
    """Run a casework command for the service holding the referral, in one transaction
    with the case locked.

    A referral nobody ever made is 404 at once; one intake made but outcomes has not
    heard of yet is 409 not-yet-known with Retry-After, at once; one not accepted by the
    caller is 403/409 at once. Only when routing has recorded the caller's acceptance and
    outcomes has not heard of it yet does the call wait for it (up to
    ``casework.wait_for_routing()`` seconds), *without holding a pooled connection*: one
    partner can never take connections from another (issue 12, finding 7).
    """
    async with db.connection() as conn:
        async with conn.transaction():
            case = await casework.ready_case(conn, referral_id, org_id)
            if case is not None:
                return [_recorded(e) for e in await act(conn, case)]
        seen = await _peek(conn, referral_id)
        # routing writes the acceptance in the accept request's own transaction: only
        # then is an answer on its way to outcomes, worth waiting for
        accepted = await routing_holder(conn, referral_id) == (org_id, "accepted")
    if seen is None and not accepted:
        async with db.connection() as conn:
            made = await known_to_intake(conn, referral_id)
        if not made:  # nobody ever made it: say so at once
            raise NotFound(f"no referral {referral_id}")
        raise NotYet("the referral is not known to outcomes yet; retry shortly")
    if not accepted:  # nothing is on its way: answer now (403 / 409 with the state)
        async with db.connection() as conn, conn.transaction():
            case = await casework.case_for(conn, referral_id, org_id)
            return [_recorded(e) for e in await act(conn, case)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + casework.wait_for_routing()
    pause = 0.02
    while (seen is None or _may_still_become_yours(seen, org_id)) and loop.time() < deadline:
        await asyncio.sleep(pause)  # polling a projection another process updates
        pause = min(pause * 2, 0.25)
        async with db.connection() as conn:
            seen = await _peek(conn, referral_id) or seen
    if seen is None:
        raise NotYet("the referral is not known to outcomes yet; retry shortly")
    async with db.connection() as conn, conn.transaction():
        case = await casework.case_for(conn, referral_id, org_id)
        return [_recorded(e) for e in await act(conn, case)]


@router.post(
    "/referrals/{referral_id}/contacts",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def first_contact(referral_id: UUID, body: FirstContact, org: Caller, db: Pool) -> Recorded:
    """First contact with the person (flags a breach of the first-contact SLA)."""
    act = _one(lambda conn, case: casework.first_contact(conn, case, org.id, body))
    return (await _as_holder(db, referral_id, org.id, act))[0]


@router.post(
    "/referrals/{referral_id}/sessions",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def session(referral_id: UUID, body: SessionHeld, org: Caller, db: Pool) -> Recorded:
    """A session the link worker held with the person."""
    act = _one(lambda conn, case: casework.session(conn, case, org.id, body))
    return (await _as_holder(db, referral_id, org.id, act))[0]


@router.post(
    "/referrals/{referral_id}/activities",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def refer_to_activity(
    referral_id: UUID, body: ActivityReferral, org: Caller, db: Pool
) -> Recorded:
    """Connect the person to an onward activity from the directory."""
    async with db.connection() as conn:
        activity = await directory.activity(conn, body.activity_id)
    act = _one(lambda conn, case: casework.refer_to_activity(conn, case, org.id, body, activity))
    return (await _as_holder(db, referral_id, org.id, act))[0]


@router.post(
    "/referrals/{referral_id}/activities/{activity_id}/attendance",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def attendance(
    referral_id: UUID,
    activity_id: Annotated[str, Path(min_length=2, max_length=63, pattern=SLUG)],
    body: Attendance,
    org: Caller,
    conn: Conn,
) -> Recorded:
    """The activity's provider records whether the person came."""
    async with conn.transaction():
        return _recorded(await casework.attendance(conn, referral_id, activity_id, org.id, body))


@router.post(
    "/referrals/{referral_id}/outcomes",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def outcome(referral_id: UUID, body: OutcomeRecord, org: Caller, db: Pool) -> Recorded:
    """An outcome measure, validated against its real range (422 names field and range)."""
    act = _one(lambda conn, case: casework.outcome(conn, case, org.id, body))
    return (await _as_holder(db, referral_id, org.id, act))[0]


@router.post(
    "/referrals/{referral_id}/assessments",
    status_code=201,
    response_model=AssessmentRecorded,
    responses=ERROR_RESPONSES,
)
async def assessment(
    referral_id: UUID, body: Assessment, org: Caller, db: Pool
) -> AssessmentRecorded:
    """Several measures taken at one sitting: one ``outcome-recorded`` event each, all
    stored or (any out of range: 422 naming ``measures[i]`` and the item) none."""
    recorded = await _as_holder(
        db, referral_id, org.id, lambda conn, case: casework.assessment(conn, case, org.id, body)
    )
    return AssessmentRecorded(referral_id=referral_id, recorded=recorded)


@router.post(
    "/referrals/{referral_id}/close",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def close(referral_id: UUID, body: Closing, org: Caller, db: Pool) -> Recorded:
    """Close the referral with a reason (frees the service's place; tells the referrer)."""
    act = _one(lambda conn, case: casework.close(conn, case, org.id, body))
    return (await _as_holder(db, referral_id, org.id, act))[0]
