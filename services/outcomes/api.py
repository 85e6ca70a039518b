"""Outcomes' HTTP routes: parse the request, build the command, hand it to the handler.

Casework by the routed service and attendance by providers; the rules are in
``domain``, the use cases in ``handlers``, the SQL in ``adapters``.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path

from directory import store as directory
from directory.model import SLUG
from eventstore.records import StoredEvent
from services.outcomes import commands
from services.outcomes.adapters import PostgresUnitOfWork
from services.outcomes.handlers import handle
from services.outcomes.requests import (
    ActivityReferral,
    Assessment,
    AssessmentRecorded,
    Attendance,
    Closing,
    FirstContact,
    MeasureTaken,
    OutcomeRecord,
    Recorded,
    SessionHeld,
)
from web.deps import Caller, Pool
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


def _taken(m: MeasureTaken) -> commands.MeasureTaken:
    return commands.MeasureTaken(m.measure, None if m.items is None else tuple(m.items), m.score)


async def _one(command: commands.Command, db: Pool) -> Recorded:
    stored = await handle(command, PostgresUnitOfWork(db.connection))
    return _recorded(stored[-1])


@router.post(
    "/referrals/{referral_id}/contacts",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def first_contact(referral_id: UUID, body: FirstContact, org: Caller, db: Pool) -> Recorded:
    """First contact with the person (flags a breach of the first-contact SLA)."""
    command = commands.RecordFirstContact(referral_id, org.id, body.contacted_at, body.mode)
    return await _one(command, db)


@router.post(
    "/referrals/{referral_id}/sessions",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def session(referral_id: UUID, body: SessionHeld, org: Caller, db: Pool) -> Recorded:
    """A session the link worker held with the person."""
    command = commands.RecordSession(
        referral_id, org.id, body.kind, body.minutes, body.mode, body.held_at
    )
    return await _one(command, db)


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
    command = commands.ReferToActivity(
        referral_id, org.id, body.activity_id, activity, body.referred_at
    )
    return await _one(command, db)


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
    db: Pool,
) -> Recorded:
    """The activity's provider records whether the person came."""
    command = commands.RecordAttendance(
        referral_id, org.id, activity_id, body.attended_at, body.attended
    )
    return await _one(command, db)


@router.post(
    "/referrals/{referral_id}/outcomes",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def outcome(referral_id: UUID, body: OutcomeRecord, org: Caller, db: Pool) -> Recorded:
    """An outcome measure, validated against its real range (422 names field and range)."""
    command = commands.RecordOutcome(
        referral_id, org.id, _taken(body), body.timepoint, body.recorded_at
    )
    return await _one(command, db)


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
    command = commands.RecordAssessment(
        referral_id,
        org.id,
        tuple(_taken(m) for m in body.measures),
        body.timepoint,
        body.recorded_at,
    )
    stored = await handle(command, PostgresUnitOfWork(db.connection))
    return AssessmentRecorded(referral_id=referral_id, recorded=[_recorded(e) for e in stored])


@router.post(
    "/referrals/{referral_id}/close",
    status_code=201,
    response_model=Recorded,
    responses=ERROR_RESPONSES,
)
async def close(referral_id: UUID, body: Closing, org: Caller, db: Pool) -> Recorded:
    """Close the referral with a reason (frees the service's place; tells the referrer)."""
    command = commands.CloseReferral(referral_id, org.id, body.reason, body.closed_at)
    return await _one(command, db)
