"""Outcomes' HTTP routes: casework by the routed service, attendance by providers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from fastapi import APIRouter
from psycopg import AsyncConnection

from directory import store as directory
from eventstore.records import StoredEvent
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
from web.deps import Caller, Conn
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


async def _as_holder(
    conn: AsyncConnection[Any],
    referral_id: UUID,
    org_id: str,
    act: Callable[[casework.CaseState], Awaitable[StoredEvent]],
) -> Recorded:
    """Run a casework command for the service holding the referral (``_as_holder_many``)."""

    async def one(case: casework.CaseState) -> list[StoredEvent]:
        return [await act(case)]

    return (await _as_holder_many(conn, referral_id, org_id, one))[0]


async def _as_holder_many(
    conn: AsyncConnection[Any],
    referral_id: UUID,
    org_id: str,
    act: Callable[[casework.CaseState], Awaitable[list[StoredEvent]]],
) -> list[Recorded]:
    """Run a casework command for the service holding the referral, in one transaction
    with the case locked; if routing's answer has not reached outcomes yet, wait for it
    outside any transaction and try once more."""
    # Not a psycopg pipeline: it saves round trips but, measured on the demo, costs the
    # API and PostgreSQL ~10% more CPU than it saves.
    async with conn.transaction():
        case = await casework.ready_case(conn, referral_id, org_id)
        if case is not None:
            return [_recorded(e) for e in await act(case)]
    await casework.await_case(conn, referral_id, org_id)
    async with conn.transaction():
        case = await casework.case_for(conn, referral_id, org_id)
        return [_recorded(e) for e in await act(case)]


@router.post(
    "/referrals/{referral_id}/contacts",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def first_contact(referral_id: UUID, body: FirstContact, org: Caller, conn: Conn) -> Recorded:
    """First contact with the person (flags a breach of the first-contact SLA)."""
    return await _as_holder(
        conn, referral_id, org.id, lambda case: casework.first_contact(conn, case, org.id, body)
    )


@router.post(
    "/referrals/{referral_id}/sessions",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def session(referral_id: UUID, body: SessionHeld, org: Caller, conn: Conn) -> Recorded:
    """A session the link worker held with the person."""
    return await _as_holder(
        conn, referral_id, org.id, lambda case: casework.session(conn, case, org.id, body)
    )


@router.post(
    "/referrals/{referral_id}/activities",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def refer_to_activity(
    referral_id: UUID, body: ActivityReferral, org: Caller, conn: Conn
) -> Recorded:
    """Connect the person to an onward activity from the directory."""
    activity = await directory.activity(conn, body.activity_id)
    return await _as_holder(
        conn,
        referral_id,
        org.id,
        lambda case: casework.refer_to_activity(conn, case, org.id, body, activity),
    )


@router.post(
    "/referrals/{referral_id}/activities/{activity_id}/attendance",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def attendance(
    referral_id: UUID, activity_id: str, body: Attendance, org: Caller, conn: Conn
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
async def outcome(referral_id: UUID, body: OutcomeRecord, org: Caller, conn: Conn) -> Recorded:
    """An outcome measure, validated against its real range (422 names field and range)."""
    return await _as_holder(
        conn, referral_id, org.id, lambda case: casework.outcome(conn, case, org.id, body)
    )


@router.post(
    "/referrals/{referral_id}/assessments",
    status_code=201,
    response_model=AssessmentRecorded,
    responses=ERROR_RESPONSES,
)
async def assessment(
    referral_id: UUID, body: Assessment, org: Caller, conn: Conn
) -> AssessmentRecorded:
    """Several measures taken at one sitting: one ``outcome-recorded`` event each, all
    stored or (any out of range: 422 naming ``measures[i]`` and the item) none."""
    recorded = await _as_holder_many(
        conn, referral_id, org.id, lambda case: casework.assessment(conn, case, org.id, body)
    )
    return AssessmentRecorded(referral_id=referral_id, recorded=recorded)


@router.post(
    "/referrals/{referral_id}/close",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def close(referral_id: UUID, body: Closing, org: Caller, conn: Conn) -> Recorded:
    """Close the referral with a reason (frees the service's place; tells the referrer)."""
    return await _as_holder(
        conn, referral_id, org.id, lambda case: casework.close(conn, case, org.id, body)
    )
