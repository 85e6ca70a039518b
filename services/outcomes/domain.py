"""Outcomes' decisions, free of I/O: a case's state and what each command makes of it.

``Case`` holds what outcomes has heard from routing through the journey log (who holds
the referral, accepted or not) and, folded from outcomes' *own* stream by ``evolve``,
what its own commands recorded (first contact, the SLA flag, onward activities,
closing) plus the stream's ``version``. ``decide(case, command, rules, now)`` returns the
events to append or the ``Refusal`` to answer with; it never raises for a rule of the
journey. The rules come from DOMAIN.md §3 and the README's API table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, assert_never
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from domain import lifecycle
from domain.lifecycle import Referral
from eventstore.records import NewEvent, new_event
from infra.local_time import add_local_days
from schemas.events import (
    ActivityAttended,
    ActivityReferred,
    FirstContactMade,
    FirstContactOverdue,
    OutcomeRecorded,
    ReferralClosed,
    SessionHeld,
)
from schemas.events.base import EventModel
from schemas.measures import Measure, MeasureError, score_outcome
from services.outcomes.commands import (
    CloseReferral,
    Command,
    FlagOverdue,
    MeasureTaken,
    RecordAssessment,
    RecordAttendance,
    RecordFirstContact,
    RecordOutcome,
    RecordSession,
    ReferToActivity,
)
from services.refusal import Conflict, Forbidden, Invalid, NotFound, NotYet, Refusal

CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of our clock a caller's world time may be (clocks differ a little)."""

PUBLIC_FIELDS = (
    "referral_id",
    "referrer_org",
    "referred_at",
    "service_org",
    "status",
    "routed_at",
    "accepted_at",
    "first_contact_at",
    "overdue_flagged",
    "closed_at",
)


@dataclass(frozen=True)
class Rules:
    """The alliance's settings the decisions depend on."""

    sla_days: int
    """Calendar days within which first contact is due after routing."""
    zone: ZoneInfo
    """The alliance's time zone: days are added on its calendar."""


@dataclass(frozen=True)
class ActivityLink:
    """An onward activity the person was referred to, as ``activity-referred`` said."""

    provider_org: str
    referred_at: datetime


@dataclass(frozen=True)
class Case:
    """A referral as outcomes knows it (see the module docstring for where each part
    comes from). ``status`` is new | routed | accepted | declined | escalated | closed."""

    referral_id: UUID
    referrer_org: str
    referred_at: datetime
    service_org: str | None
    status: str
    routed_at: datetime | None
    accepted_at: datetime | None
    first_contact_at: datetime | None = None
    overdue_flagged: bool = False
    closed_at: datetime | None = None
    routed_seen_at: datetime | None = None
    """When outcomes heard of the routing (the SLA timer waits from then, too)."""
    version: int = 0
    """Outcomes' own stream's version for this referral (0: no event yet)."""
    activities: Mapping[str, ActivityLink] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The state a 409 shows the caller (the case row's columns, as strings)."""
        values = asdict(self)
        return {
            k: (v.isoformat() if isinstance(v, datetime) else str(v) if v else v)
            for k, v in ((k, values[k]) for k in PUBLIC_FIELDS)
        }


def evolve(case: Case, events: Iterable[EventModel]) -> Case:
    """The case after outcomes' own ``events`` (typed, upcast), one version each.

    The milestones (first contact, the SLA flag, closing) are the referral lifecycle's
    (``domain.lifecycle.apply``); only which activities the person was referred to, and
    by whom they are provided, is outcomes' own bookkeeping.
    """
    for model in events:
        event = lifecycle.as_event(model)
        own = lifecycle.apply(
            Referral(
                first_contact_at=case.first_contact_at,
                overdue=case.overdue_flagged,
                closed_at=case.closed_at,
            ),
            event,
        )
        activities = case.activities
        if isinstance(event, ActivityReferred):
            link = ActivityLink(event.provider_org, event.referred_at)
            activities = {**activities, event.activity_id: link}
        case = replace(
            case,
            first_contact_at=own.first_contact_at,
            overdue_flagged=own.overdue,
            closed_at=own.closed_at,
            status="closed" if own.closed else case.status,
            activities=activities,
            version=case.version + 1,
        )
    return case


def first_contact_due(case: Case, rules: Rules) -> datetime:
    """``sla_days`` calendar days after routing, at the same wall-clock time in the
    alliance's zone (a week from 09:00 on the Friday before the clocks change is 09:00)."""
    return add_local_days(case.routed_at or case.referred_at, rules.sla_days, rules.zone)


def holds(case: Case | None, org: str) -> bool:
    """``org`` holds the referral, accepted and open: casework can go ahead."""
    return case is not None and case.service_org == org and case.status == "accepted"


def may_still_become_yours(case: Case, org: str) -> bool:
    """Routing's answer may still be on its way to outcomes: the case is neither yours
    and accepted (ready), nor settled (closed, escalated, accepted by another service)."""
    ready = case.service_org == org and case.status in ("accepted", "closed")
    settled = case.status in ("closed", "escalated") or (
        case.status == "accepted" and case.service_org != org
    )
    return not (ready or settled)


@dataclass(frozen=True)
class Decision:
    """What a command decided: the events to append, and the case after them (so that
    whoever records the events can write the case without reading them back)."""

    events: list[NewEvent]
    after: Case


def behind_routing(case: Case, holder: tuple[str, str] | None, org: str) -> bool:
    """Outcomes has not yet heard what routing decided (``holder``: routing's
    (service_org, status), None while unrouted), and what is on its way may concern
    ``org``: answer 409 not-yet rather than judge on the stale case."""
    settled = case.status in ("closed", "escalated") or (
        case.status == "accepted" and case.service_org != org
    )
    lagging = holder is None or (case.service_org, case.status) != holder
    return not settled and lagging and (holder is None or holder[0] == org)


def decide(case: Case | None, command: Command, rules: Rules, now: datetime) -> Decision | Refusal:
    """The events ``command`` records on ``case`` (``now``: the server's clock), or the
    ``Refusal`` to answer with (404, 403, 409 with the case's state, 422 naming the field).
    """
    try:
        return _decide(case, command, rules, now)
    except Refusal as refusal:
        return refusal


def _decide(case: Case | None, command: Command, rules: Rules, now: datetime) -> Decision:
    if isinstance(command, RecordAttendance):
        return _attendance(case, command, now)
    if isinstance(command, FlagOverdue):
        return _flag_overdue(case, command, rules)
    if case is None:
        raise NotFound(f"no referral {command.referral_id} is known to outcomes")
    _holder(case, command.org)
    match command:
        case RecordFirstContact():
            return _first_contact(case, command, rules, now)
        case RecordSession():
            return _session(case, command, now)
        case ReferToActivity():
            return _refer(case, command, now)
        case RecordOutcome():
            return _outcome(case, command, now)
        case RecordAssessment():
            return _assessment(case, command, now)
        case CloseReferral():
            return _close(case, command, now)
        case _:
            assert_never(command)


def _holder(case: Case, org: str) -> None:
    if case.service_org != org:
        raise Forbidden(f"referral {case.referral_id} is not routed to {org}")
    if case.status == "closed":
        raise Conflict("the referral is closed", state=case.public())
    if case.status != "accepted":
        raise Conflict("the referral has not been accepted yet", state=case.public())


def _check_time(at: datetime, case: Case, now: datetime, field: str) -> None:
    """World times are the caller's, but never in the future nor before the referral."""
    if at > now + CLOCK_SKEW:
        raise Invalid("must not be in the future", field=field)
    if at < case.referred_at:
        raise Invalid("must not be before the referral was made", field=field)


def _build(model: type[EventModel], data: dict[str, Any]) -> EventModel:
    """Validate event data with its schema (the latest version's model, which is what
    ``schemas.events`` exports); a range error names the field (422)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise Invalid(str(err["msg"]).removeprefix("Value error, "), field=where) from None


def _events(case: Case, actor: str, at: datetime, *models: EventModel) -> Decision:
    events = [
        new_event(m, actor=actor, occurred_at=at, correlation_id=case.referral_id) for m in models
    ]
    return Decision(events, evolve(case, models))


def _overdue(case: Case, due: datetime, rules: Rules) -> EventModel:
    return _build(
        FirstContactOverdue,
        {
            "referral_id": case.referral_id,
            "service_org": case.service_org,
            "due_by": due,
            "sla_days": rules.sla_days,
        },
    )


def _first_contact(
    case: Case, command: RecordFirstContact, rules: Rules, now: datetime
) -> Decision:
    _check_time(command.contacted_at, case, now, "contacted_at")
    if case.first_contact_at is not None:
        raise Conflict("first contact is already recorded", state=case.public())
    models = []
    due = first_contact_due(case, rules)
    if command.contacted_at > due and not case.overdue_flagged:
        models.append(_overdue(case, due, rules))
    data = {
        "referral_id": case.referral_id,
        "service_org": command.org,
        "contacted_at": command.contacted_at,
        "mode": command.mode,
    }
    models.append(_build(FirstContactMade, data))
    return _events(case, command.org, command.contacted_at, *models)


def _session(case: Case, command: RecordSession, now: datetime) -> Decision:
    _check_time(command.held_at, case, now, "held_at")
    data: dict[str, Any] = {
        "referral_id": case.referral_id,
        "session_id": command.session_id,
        "kind": command.kind,
        "mode": command.mode,
        "held_at": command.held_at,
    }
    data["duration_minutes"] = command.minutes
    return _events(case, command.org, command.held_at, _build(SessionHeld, data))


def _refer(case: Case, command: ReferToActivity, now: datetime) -> Decision:
    _check_time(command.referred_at, case, now, "referred_at")
    activity = command.activity
    if activity is None:
        raise Invalid(f"no activity {command.activity_id!r} in the directory", field="activity_id")
    if activity.status != "active":
        raise Conflict(f"activity {activity.id} is {activity.status}")
    if activity.id in case.activities:
        raise Conflict(f"the referral is already connected to {activity.id}")
    data = {
        "referral_id": case.referral_id,
        "activity_id": activity.id,
        "provider_org": activity.provider,
        "activity_kind": activity.kind,
        "referred_at": command.referred_at,
    }
    return _events(case, command.org, command.referred_at, _build(ActivityReferred, data))


def _attendance(case: Case | None, command: RecordAttendance, now: datetime) -> Decision:
    link = None if case is None else case.activities.get(command.activity_id)
    if case is None or link is None:
        raise NotFound(
            f"referral {command.referral_id} is not connected to activity {command.activity_id}"
        )
    if link.provider_org != command.org:
        raise Forbidden(f"activity {command.activity_id} is provided by another organisation")
    if case.status == "closed":  # the same rule as every casework command
        raise Conflict("the referral is closed", state=case.public())
    _check_time(command.attended_at, case, now, "attended_at")
    if command.attended_at < link.referred_at:
        raise Invalid("must not be before the person was referred to it", field="attended_at")
    data = {
        "referral_id": case.referral_id,
        "activity_id": command.activity_id,
        "provider_org": command.org,
        "attended_at": command.attended_at,
        "attended": command.attended,
    }
    return _events(case, command.org, command.attended_at, _build(ActivityAttended, data))


def _outcome_model(
    case: Case, taken: MeasureTaken, timepoint: str, at: datetime, field: str = ""
) -> EventModel:
    """An ``outcome-recorded`` model for one measure; a range error names ``field`` + item."""
    items = None if taken.items is None else list(taken.items)
    try:
        scored = score_outcome(Measure(taken.measure), items, taken.score)
    except MeasureError as exc:
        raise Invalid(f"allowed {exc.allowed}, got {exc.got!r}", field=field + exc.field) from None
    data = {
        "referral_id": case.referral_id,
        "measure": taken.measure,
        "timepoint": timepoint,
        "items": items,
        "score": scored.score,
        "recorded_at": at,
    }
    return _build(OutcomeRecorded, data)


def _outcome(case: Case, command: RecordOutcome, now: datetime) -> Decision:
    _check_time(command.recorded_at, case, now, "recorded_at")
    model = _outcome_model(case, command.taken, command.timepoint, command.recorded_at)
    return _events(case, command.org, command.recorded_at, model)


def _assessment(case: Case, command: RecordAssessment, now: datetime) -> Decision:
    _check_time(command.recorded_at, case, now, "recorded_at")
    names = [m.measure for m in command.measures]
    if len(set(names)) != len(names):
        raise Invalid("each measure at most once per assessment", field="measures")
    models = [
        _outcome_model(case, m, command.timepoint, command.recorded_at, f"measures[{i}].")
        for i, m in enumerate(command.measures)
    ]
    return _events(case, command.org, command.recorded_at, *models)


def _close(case: Case, command: CloseReferral, now: datetime) -> Decision:
    _check_time(command.closed_at, case, now, "closed_at")
    data = {
        "referral_id": case.referral_id,
        "reason": command.reason,
        "closed_at": command.closed_at,
    }
    return _events(case, command.org, command.closed_at, _build(ReferralClosed, data))


def _flag_overdue(case: Case | None, command: FlagOverdue, rules: Rules) -> Decision:
    """Flag a case nobody has contacted in time, once; the timer runs it on candidates a
    query picked, and this re-checks them on the state the append is decided on."""
    if case is None:
        raise NotYet(f"referral {command.referral_id} is not known to outcomes yet")
    waiting = (
        case.first_contact_at is None
        and case.closed_at is None
        and not case.overdue_flagged
        and case.status in ("routed", "accepted")
    )
    if not waiting or case.routed_at is None or case.routed_seen_at is None:
        return Decision([], case)
    due = first_contact_due(case, rules)
    # Loading a year of history: routed long ago in the world, but only just heard of.
    seen_due = add_local_days(case.routed_seen_at, rules.sla_days, rules.zone)
    if due >= command.now or seen_due >= command.now:
        return Decision([], case)
    return _events(case, "outcomes", due, _overdue(case, due, rules))
