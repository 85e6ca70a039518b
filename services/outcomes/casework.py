"""The link worker's casework: contacts, sessions, onward activities, outcomes, closing.

Each command runs in the caller's transaction against the case row (locked), appends
to outcomes' own stream and refuses, with the case's state, what the journey does not
allow (a session before acceptance, anything after closing).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import ValidationError

from directory.model import Activity
from eventstore.records import StoredEvent, new_event
from infra.local_time import add_local_days, alliance_zone
from referralnet.settings import settings
from schemas.measures import Measure, MeasureError, score_outcome
from schemas.registry import latest_version, model_for
from services.existence import known_to_intake, routing_holder
from services.outcomes.requests import (
    ActivityReferral,
    Assessment,
    Attendance,
    Closing,
    FirstContact,
    MeasureTaken,
    OutcomeRecord,
    SessionHeld,
)
from services.outcomes.store import STORE
from services.refusal import Conflict, Forbidden, Invalid, NotFound, NotYet

CLOCK_SKEW = timedelta(minutes=5)


def wait_for_routing() -> float:
    """Seconds a command waits for routing's event before 409 not-yet (configurable)."""
    return settings().wait_for_routing_seconds


def sla_days() -> int:
    """Days within which first contact is due after routing (configurable)."""
    return settings().first_contact_sla_days


def first_contact_due(case: CaseState) -> datetime:
    """``sla_days`` calendar days after routing, at the same wall-clock time in the
    alliance's zone (a week from 09:00 on the Friday before the clocks change is 09:00)."""
    return add_local_days(case.routed_at or case.referred_at, sla_days(), alliance_zone())


@dataclass(frozen=True)
class CaseState:
    referral_id: UUID
    referrer_org: str
    referred_at: datetime
    service_org: str | None
    status: str
    routed_at: datetime | None
    accepted_at: datetime | None
    first_contact_at: datetime | None
    overdue_flagged: bool
    closed_at: datetime | None

    def public(self) -> dict[str, Any]:
        return {
            k: (v.isoformat() if isinstance(v, datetime) else str(v) if v else v)
            for k, v in asdict(self).items()
        }


CASE_COLUMNS = (
    "referral_id, referrer_org, referred_at, service_org, status, routed_at, accepted_at, "
    "first_contact_at, overdue_flagged, closed_at"
)


async def _read_case(
    conn: AsyncConnection[Any], referral_id: UUID, lock: bool = False
) -> CaseState | None:
    """The case, locked for this transaction if ``lock``: the lock serialises the writers of
    the referral's outcomes stream, so ``extend`` reads the head only after taking it."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {CASE_COLUMNS} FROM outcomes.cases WHERE referral_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (referral_id,),
        )
        row = await cur.fetchone()
    return CaseState(**row) if row else None


async def await_case(conn: AsyncConnection[Any], referral_id: UUID, org: str) -> None:
    """Wait (outside any transaction) until outcomes has heard that ``org`` holds the case.

    Routing's answer reaches outcomes through the bus a few milliseconds after the
    partner saw it; waiting briefly beats refusing a partner who acted promptly. Only
    states that can still change towards "accepted by you" are waited for: a case
    accepted by someone else or closed is refused at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_for_routing()
    pause = 0.02
    while True:
        case = await _read_case(conn, referral_id)
        if case and case.service_org == org and case.status in ("accepted", "closed"):
            return
        if case is None and not await known_to_intake(conn, referral_id):
            raise NotFound(f"no referral {referral_id}")  # nothing is on its way: no wait
        settled = case is not None and (
            case.status in ("closed", "escalated")
            or (case.status == "accepted" and case.service_org != org)
        )
        if settled or loop.time() >= deadline:
            await _refuse_not_yet(conn, referral_id, org, case, settled)
            assert case is not None
            if case.service_org != org:
                raise Forbidden(f"referral {referral_id} is not routed to {org}")
            raise Conflict("the referral has not been accepted yet", state=case.public())
        await asyncio.sleep(pause)  # polling a projection another process updates
        pause = min(pause * 2, 0.25)  # a hop or two away: each poll is a query


async def _refuse_not_yet(
    conn: AsyncConnection[Any], referral_id: UUID, org: str, case: CaseState | None, settled: bool
) -> None:
    """404 for a referral nobody knows; 409 not-yet while outcomes lags behind intake or
    routing (routing has not decided, or decided for ``org`` what outcomes has not seen)."""
    if case is None and not await known_to_intake(conn, referral_id):
        raise NotFound(f"no referral {referral_id}")
    if not settled:
        holder = await routing_holder(conn, referral_id)
        lagging = case is None or holder is None or (case.service_org, case.status) != holder
        if lagging and (holder is None or holder[0] == org):
            raise NotYet(f"referral {referral_id} has not reached outcomes yet; retry shortly")
    if case is None:
        raise Forbidden(f"referral {referral_id} is not routed to {org}")


async def case_for(conn: AsyncConnection[Any], referral_id: UUID, org: str) -> CaseState:
    """The case, locked for this transaction, if ``org`` holds it and it is open."""
    locked = await _read_case(conn, referral_id, lock=True)
    if locked is None:
        raise NotFound(f"no referral {referral_id} is known to outcomes")
    if locked.service_org != org:
        raise Forbidden(f"referral {referral_id} is not routed to {org}")
    if locked.status == "closed":
        raise Conflict("the referral is closed", state=locked.public())
    if locked.status != "accepted":
        raise Conflict("the referral has not been accepted yet", state=locked.public())
    return locked


async def ready_case(conn: AsyncConnection[Any], referral_id: UUID, org: str) -> CaseState | None:
    """The case, locked, if ``org`` holds it accepted and open; None if not (or not yet).

    The common case in one query; the caller falls back to ``await_case`` otherwise.
    """
    locked = await _read_case(conn, referral_id, lock=True)
    ready = locked is not None and locked.service_org == org and locked.status == "accepted"
    return locked if ready else None


def check_time(at: datetime, case: CaseState, field: str) -> None:
    """World times are the caller's, but never in the future nor before the referral."""
    if at > datetime.now(UTC) + CLOCK_SKEW:
        raise Invalid("must not be in the future", field=field)
    if at < case.referred_at:
        raise Invalid("must not be before the referral was made", field=field)


def build(event_type: str, data: dict[str, Any]) -> Any:
    """Validate event data with its schema; a range error names the field (422)."""
    try:
        return model_for(event_type, latest_version(event_type)).model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise Invalid(str(err["msg"]).removeprefix("Value error, "), field=field) from None


async def append_events(
    conn: AsyncConnection[Any], case: CaseState, actor: str, at: datetime, *models: Any
) -> list[StoredEvent]:
    events = [
        new_event(m, actor=actor, occurred_at=at, correlation_id=case.referral_id) for m in models
    ]
    return await STORE.extend(conn, case.referral_id, events)


async def first_contact(
    conn: AsyncConnection[Any], case: CaseState, org: str, body: FirstContact
) -> StoredEvent:
    check_time(body.contacted_at, case, "contacted_at")
    if case.first_contact_at is not None:
        raise Conflict("first contact is already recorded", state=case.public())
    models = []
    due = first_contact_due(case)
    if body.contacted_at > due and not case.overdue_flagged:
        models.append(overdue_model(case, due))
    models.append(
        build(
            "first-contact-made",
            {
                "referral_id": case.referral_id,
                "service_org": org,
                "contacted_at": body.contacted_at,
                "mode": body.mode,
            },
        )
    )
    await conn.execute(
        "UPDATE outcomes.cases SET first_contact_at = %s, overdue_flagged = overdue_flagged "
        "OR %s WHERE referral_id = %s",
        (body.contacted_at, len(models) > 1, case.referral_id),
    )
    return (await append_events(conn, case, org, body.contacted_at, *models))[-1]


def overdue_model(case: CaseState, due: datetime) -> Any:
    return build(
        "first-contact-overdue",
        {
            "referral_id": case.referral_id,
            "service_org": case.service_org,
            "due_by": due,
            "sla_days": sla_days(),
        },
    )


def session_data(case: CaseState, body: SessionHeld, session_id: UUID) -> dict[str, Any]:
    """``session-held`` data in the latest schema version's field names."""
    data: dict[str, Any] = {
        "referral_id": case.referral_id,
        "session_id": session_id,
        "kind": body.kind,
        "mode": body.mode,
        "held_at": body.held_at,
    }
    duration = "minutes" if latest_version("session-held") == 1 else "duration_minutes"
    data[duration] = body.minutes
    return data


async def session(
    conn: AsyncConnection[Any], case: CaseState, org: str, body: SessionHeld
) -> StoredEvent:
    check_time(body.held_at, case, "held_at")
    model = build("session-held", session_data(case, body, uuid4()))
    return (await append_events(conn, case, org, body.held_at, model))[0]


async def refer_to_activity(
    conn: AsyncConnection[Any],
    case: CaseState,
    org: str,
    body: ActivityReferral,
    activity: Activity | None,
) -> StoredEvent:
    check_time(body.referred_at, case, "referred_at")
    if activity is None:
        raise Invalid(f"no activity {body.activity_id!r} in the directory", field="activity_id")
    if activity.status != "active":
        raise Conflict(f"activity {activity.id} is {activity.status}")
    cur = await conn.execute(
        "INSERT INTO outcomes.activity_links (referral_id, activity_id, provider_org, "
        "referred_at) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (case.referral_id, activity.id, activity.provider, body.referred_at),
    )
    if await cur.fetchone() is None:
        raise Conflict(f"the referral is already connected to {activity.id}")
    model = build(
        "activity-referred",
        {
            "referral_id": case.referral_id,
            "activity_id": activity.id,
            "provider_org": activity.provider,
            "activity_kind": activity.kind,
            "referred_at": body.referred_at,
        },
    )
    return (await append_events(conn, case, org, body.referred_at, model))[0]


async def attendance(
    conn: AsyncConnection[Any], referral_id: UUID, activity_id: str, org: str, body: Attendance
) -> StoredEvent:
    """The activity's provider records attendance (only for people referred to it)."""
    cur = await conn.execute(
        "SELECT provider_org, referred_at FROM outcomes.activity_links "
        "WHERE referral_id = %s AND activity_id = %s",
        (referral_id, activity_id),
    )
    link = await cur.fetchone()
    if link is None:
        raise NotFound(f"referral {referral_id} is not connected to activity {activity_id}")
    if link[0] != org:
        raise Forbidden(f"activity {activity_id} is provided by another organisation")
    case = await _read_case(conn, referral_id, lock=True)
    if case is None:
        raise NotYet("the referral is not known to outcomes yet")
    if case.status == "closed":  # the same rule as every casework command
        raise Conflict("the referral is closed", state=case.public())
    check_time(body.attended_at, case, "attended_at")
    if body.attended_at < link[1]:
        raise Invalid("must not be before the person was referred to it", field="attended_at")
    model = build(
        "activity-attended",
        {
            "referral_id": referral_id,
            "activity_id": activity_id,
            "provider_org": org,
            "attended_at": body.attended_at,
            "attended": body.attended,
        },
    )
    return (await append_events(conn, case, org, body.attended_at, model))[0]


def _outcome_model(
    case: CaseState, taken: MeasureTaken, timepoint: str, at: datetime, field: str = ""
) -> Any:
    """An ``outcome-recorded`` model for one measure; a range error names ``field`` + item."""
    try:
        scored = score_outcome(Measure(taken.measure), taken.items, taken.score)
    except MeasureError as exc:
        raise Invalid(f"allowed {exc.allowed}, got {exc.got!r}", field=field + exc.field) from None
    return build(
        "outcome-recorded",
        {
            "referral_id": case.referral_id,
            "measure": taken.measure,
            "timepoint": timepoint,
            "items": taken.items,
            "score": scored.score,
            "recorded_at": at,
        },
    )


async def outcome(
    conn: AsyncConnection[Any], case: CaseState, org: str, body: OutcomeRecord
) -> StoredEvent:
    check_time(body.recorded_at, case, "recorded_at")
    model = _outcome_model(case, body, body.timepoint, body.recorded_at)
    return (await append_events(conn, case, org, body.recorded_at, model))[0]


async def assessment(
    conn: AsyncConnection[Any], case: CaseState, org: str, body: Assessment
) -> list[StoredEvent]:
    """Every measure of one sitting validated first, then appended in one statement."""
    check_time(body.recorded_at, case, "recorded_at")
    names = [m.measure for m in body.measures]
    if len(set(names)) != len(names):
        raise Invalid("each measure at most once per assessment", field="measures")
    models = [
        _outcome_model(case, m, body.timepoint, body.recorded_at, f"measures[{i}].")
        for i, m in enumerate(body.measures)
    ]
    return await append_events(conn, case, org, body.recorded_at, *models)


async def close(
    conn: AsyncConnection[Any], case: CaseState, org: str, body: Closing
) -> StoredEvent:
    check_time(body.closed_at, case, "closed_at")
    model = build(
        "referral-closed",
        {"referral_id": case.referral_id, "reason": body.reason, "closed_at": body.closed_at},
    )
    await conn.execute(
        "UPDATE outcomes.cases SET status = 'closed', closed_at = %s WHERE referral_id = %s",
        (body.closed_at, case.referral_id),
    )
    return (await append_events(conn, case, org, body.closed_at, model))[0]
