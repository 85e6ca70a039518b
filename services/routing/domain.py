"""Routing decisions, free of I/O: which link-worker service should take a referral,
and what an answer (accept, decline) or a closing does to the case and the caseloads.

Each decision returns a ``Decision`` (events to append, the case after them, caseload
changes) or the ``Refusal`` to answer with; candidates are given as the caller locked
them, so two concurrent decisions never take the last place twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from domain.lifecycle import Referral, Status
from eventstore.records import NewEvent, new_event
from schemas.events.base import EventModel
from schemas.events.referral import (
    ReferralAccepted,
    ReferralCreated,
    ReferralDeclined,
    ReferralEscalated,
    ReferralRouted,
)
from services.refusal import Conflict, Forbidden, Invalid, Refusal
from services.routing.commands import AcceptReferral, DeclineReferral, OpenCase

AGE_BAND_BOUNDS = {
    "16-24": (16, 24),
    "25-34": (25, 34),
    "35-49": (35, 49),
    "50-64": (50, 64),
    "65-74": (65, 74),
    "75+": (75, 130),
}


@dataclass(frozen=True)
class Candidate:
    """A link-worker service with its current caseload (as locked for this decision)."""

    service_org: str
    areas: frozenset[str]
    needs: frozenset[str]
    min_age: int
    max_age: int | None
    caseload_limit: int
    caseload: int

    @property
    def free(self) -> int:
        return self.caseload_limit - self.caseload


@dataclass(frozen=True)
class Case:
    """What routing knows of a referral: no personal data, just what routing needs."""

    area: str
    needs: frozenset[str]
    age_band: str
    tried: tuple[str, ...] = ()


def eligible(case: Case, service: Candidate) -> bool:
    """Serves the area, covers at least one need, takes the person's age, not yet tried."""
    low, high = AGE_BAND_BOUNDS.get(case.age_band, (16, 130))
    too_young = high < service.min_age
    too_old = service.max_age is not None and low > service.max_age
    return (
        case.area in service.areas
        and bool(case.needs & service.needs)
        and not too_young
        and not too_old
        and service.service_org not in case.tried
    )


def choose_service(case: Case, services: Sequence[Candidate]) -> Candidate | None:
    """Best eligible service with room: most needs covered, then most room, then name.

    Returns None when none is left (the caller escalates). Capacity is checked against
    rows the caller has locked, so two concurrent decisions cannot both take the last place.
    """
    open_ = [s for s in services if eligible(case, s) and s.free > 0]
    if not open_:
        return None
    return min(
        open_,
        key=lambda s: (
            -len(case.needs & s.needs),
            -(s.free / s.caseload_limit),
            s.service_org,
        ),
    )


# --- a referral's case as routing decides on it ------------------------------------------

CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of our clock a caller's world time may be."""


@dataclass(frozen=True)
class RoutingCase:
    """A referral as routing holds it. ``status``: new | routed | accepted | escalated |
    closed; ``tried``: the services that declined, in order; ``version``: routing's own
    stream's version for the referral."""

    referral_id: UUID
    area: str
    needs: tuple[str, ...]
    age_band: str
    status: str
    service_org: str | None
    tried: tuple[str, ...]
    holds_place: bool
    referred_at: datetime
    version: int = 0
    urgency: str = ""
    referrer_org: str = ""

    @property
    def case(self) -> Case:
        return Case(self.area, frozenset(self.needs), self.age_band, self.tried)

    def state(self) -> dict[str, Any]:
        """What a 409 shows the caller."""
        return {"status": self.status, "service_org": self.service_org, "tried": list(self.tried)}


@dataclass(frozen=True)
class Decision:
    """Events to append, the case after them, and caseload changes per service."""

    events: list[NewEvent]
    after: RoutingCase
    places: Mapping[str, int] = field(default_factory=dict)


def opened(created: ReferralCreated) -> RoutingCase:
    """The case a ``referral-created`` starts (no personal data: area, needs, age band)."""
    return RoutingCase(
        created.referral_id,
        created.area,
        tuple(str(n) for n in created.needs),
        str(created.age_band),
        "new",
        None,
        (),
        False,
        created.referred_at,
        urgency=str(created.urgency),
        referrer_org=created.referrer_org,
    )


_STATUS = {
    Status.REFERRED: "new",
    Status.ROUTED: "routed",
    Status.DECLINED: "routed",  # a decline is always appended with its onward routing
    Status.ACCEPTED: "accepted",
    Status.IN_PROGRESS: "accepted",
    Status.ESCALATED: "escalated",
    Status.CLOSED: "closed",
}


def from_lifecycle(created: ReferralCreated, referral: Referral, version: int) -> RoutingCase:
    """The case as routing keeps it, from the referral's lifecycle (``domain.lifecycle``
    folded over the referral's creation, routing's own events and its closing)."""
    status = _STATUS[referral.status] if referral.status else "new"
    return replace(
        opened(created),
        status=status,
        service_org=referral.parties.service_org,
        tried=referral.parties.declined_by,
        holds_place=status in ("routed", "accepted"),
        version=version,
    )


def route(
    case: RoutingCase,
    candidates: Sequence[Candidate],
    *,
    at: datetime,
    actor: str,
    causation: UUID,
) -> Decision:
    """Where the case goes next: the best eligible service with room (one place taken),
    or escalation when none is left. ``candidates`` are as locked for this decision."""
    chosen = choose_service(case.case, candidates)
    model: EventModel
    if chosen is None:
        reason = "no eligible link-worker service with capacity is left"
        model = ReferralEscalated(
            referral_id=case.referral_id, reason=reason, tried=list(case.tried)
        )
        after = replace(case, status="escalated", service_org=None, holds_place=False)
        places: Mapping[str, int] = {}
    else:
        model = ReferralRouted(
            referral_id=case.referral_id,
            service_org=chosen.service_org,
            attempt=len(case.tried) + 1,
            reason=f"area {case.area}; covers {len(case.case.needs & chosen.needs)} need(s); "
            f"{chosen.free - 1} place(s) left",
        )
        after = replace(case, status="routed", service_org=chosen.service_org, holds_place=True)
        places = {chosen.service_org: +1}
    event = new_event(
        model, actor=actor, occurred_at=at, correlation_id=case.referral_id, causation_id=causation
    )
    return Decision([event], replace(after, version=case.version + 1), places)


def open_case(command: OpenCase, candidates: Sequence[Candidate]) -> Decision:
    """A new referral: its case, routed (or escalated) at once."""
    case = opened(command.created)
    return route(case, candidates, at=command.at, actor="routing", causation=command.event_id)


def _answerable(case: RoutingCase, org: str) -> None:
    if case.service_org != org:
        raise Forbidden(f"referral {case.referral_id} is not routed to {org}")
    if case.status != "routed":
        raise Conflict(f"referral is {case.status}, not awaiting acceptance", state=case.state())


def _check_time(at: datetime, case: RoutingCase, now: datetime, field: str) -> None:
    if at > now + CLOCK_SKEW:
        raise Invalid("must not be in the future", field=field)
    if at < case.referred_at:
        raise Invalid("must not be before the referral was made", field=field)


def accept(case: RoutingCase, command: AcceptReferral, now: datetime) -> Decision | Refusal:
    """The routed service takes the referral on (403 anyone else; 409 unless routed)."""
    try:
        _answerable(case, command.org)
        _check_time(command.accepted_at, case, now, "accepted_at")
    except Refusal as refusal:
        return refusal
    model = ReferralAccepted(
        referral_id=case.referral_id, service_org=command.org, accepted_at=command.accepted_at
    )
    event = new_event(
        model, actor=command.org, occurred_at=command.accepted_at, correlation_id=case.referral_id
    )
    return Decision([event], replace(case, status="accepted", version=case.version + 1))


def decline(
    case: RoutingCase, command: DeclineReferral, candidates: Sequence[Candidate], now: datetime
) -> Decision | Refusal:
    """The routed service declines: its place is freed and the referral routed to the
    next eligible service it has not been to (or escalated). Rules as ``accept``."""
    try:
        _answerable(case, command.org)
        _check_time(command.declined_at, case, now, "declined_at")
        model = ReferralDeclined.model_validate(
            {
                "referral_id": case.referral_id,
                "service_org": command.org,
                "reason": command.reason,
                "declined_at": command.declined_at,
            }
        )
    except Refusal as refusal:
        return refusal
    declined = new_event(
        model, actor=command.org, occurred_at=command.declined_at, correlation_id=case.referral_id
    )
    left = replace(
        case, tried=(*case.tried, command.org), holds_place=False, version=case.version + 1
    )
    onward = route(
        left, candidates, at=command.declined_at, actor="routing", causation=declined.event_id
    )
    places = {command.org: -1}
    for org, delta in onward.places.items():
        places[org] = places.get(org, 0) + delta
    return Decision([declined, *onward.events], onward.after, places)


def release(case: RoutingCase) -> Decision:
    """The referral was closed: its place (if it holds one) is free again; no event."""
    places = {case.service_org: -1} if case.holds_place and case.service_org else {}
    return Decision([], replace(case, status="closed", holds_place=False), places)
