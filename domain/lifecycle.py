"""The referral's lifecycle as one pure fold: ``apply(state, event) -> state``.

Every consumer that needs to know where a referral stands (its status, who holds it,
its milestones and counters) folds the referral's typed, upcast events with
:func:`apply` instead of writing the journey's rules out again. No I/O, no clock, no
event-type strings: events are the latest models from :mod:`schemas.events`, as
:func:`schemas.registry.decode` returns them (older versions are upcast there, so
``session-held`` v1 never reaches this module).

Shapes: :class:`Referral` is immutable; ``apply`` returns a new one. A state folded
from a partial history (a consumer that sees a referral from its middle) has
``status`` None until it sees ``referral-created``; everything else starts empty.

How to add an event type (e.g. ``consent-withdrawn``):

1. its model in ``schemas/events/`` and in ``ALL_MODELS`` (the registry);
2. its class in :data:`LifecycleEvent` below, a ``case`` in :func:`apply` (and in
   :func:`occurred_at` and ``_parties_after``, whose case returns None if it leaves the
   parties alone), and, if it changes the status, an entry in :data:`STATUS_RULES`.
   mypy fails on the ``assert_never`` of every ``match`` until the clause is there;
3. in every consumer, either handle it or list it in that consumer's ``IGNORES``:
   ``tests/unit/test_lifecycle_coverage.py`` fails until each has decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeVar, assert_never, cast, get_args

from schemas.events import (
    ActivityAttended,
    ActivityReferred,
    ClosureReason,
    ConsentWithdrawn,
    EventModel,
    FirstContactMade,
    FirstContactOverdue,
    OutcomeRecorded,
    PersonErased,
    ReferralAccepted,
    ReferralClosed,
    ReferralCreated,
    ReferralDeclined,
    ReferralEscalated,
    ReferralRouted,
    SessionHeld,
    SessionKind,
)

LifecycleEvent = (
    ReferralCreated
    | ReferralRouted
    | ReferralAccepted
    | ReferralDeclined
    | ReferralEscalated
    | FirstContactMade
    | FirstContactOverdue
    | SessionHeld
    | ActivityReferred
    | ActivityAttended
    | OutcomeRecorded
    | ReferralClosed
    | ConsentWithdrawn
    | PersonErased
)
"""Every event of a referral's journey, latest version of each type."""

EVENT_CLASSES: Final[tuple[type[LifecycleEvent], ...]] = get_args(LifecycleEvent)
"""The classes of :data:`LifecycleEvent`, in journey order."""

_EVENT_CLASS_SET: Final[frozenset[type[EventModel]]] = frozenset(EVENT_CLASSES)

HANDLES: Final[frozenset[type[EventModel]]] = frozenset(EVENT_CLASSES)
"""What the fold handles (the coverage test checks this is every registered type)."""

IGNORES: Final[frozenset[type[EventModel]]] = frozenset()
"""Registered event types the fold deliberately leaves alone: none."""


class Status(StrEnum):
    """Where a referral stands, as the views show it (DESIGN §5)."""

    REFERRED = "referred"
    ROUTED = "routed"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    ESCALATED = "escalated"
    IN_PROGRESS = "in-progress"
    CLOSED = "closed"


StatusRule = Status | Mapping[Status | None, Status]
"""A :class:`Status`: the event sets it whatever came before. A mapping: the event moves
the listed statuses (None: not known yet) to another and leaves the rest alone."""

STATUS_RULES: Final[Mapping[type[EventModel], StatusRule]] = MappingProxyType(
    {
        # Created only starts the lifecycle: a copy of it re-sent to a partner that
        # becomes entitled later must not wind a referral back.
        ReferralCreated: MappingProxyType({None: Status.REFERRED}),
        ReferralRouted: Status.ROUTED,
        ReferralAccepted: Status.ACCEPTED,
        ReferralDeclined: Status.DECLINED,
        ReferralEscalated: Status.ESCALATED,
        FirstContactMade: Status.IN_PROGRESS,
        # A session proves the work started even when first contact was not recorded.
        SessionHeld: MappingProxyType({Status.ACCEPTED: Status.IN_PROGRESS}),
        ReferralClosed: Status.CLOSED,
    }
)
"""How each event class changes the status; a class not listed leaves it as it was.
The single source of the status rules: views derive their set-based SQL from it."""

OPEN_WITH_SERVICE: Final[frozenset[Status]] = frozenset(
    {Status.ROUTED, Status.ACCEPTED, Status.IN_PROGRESS}
)
"""Statuses in which the routed service holds the referral (declined/escalated: it does not)."""


def _transitions(rule: StatusRule) -> Mapping[Status | None, Status | None]:
    starts: list[Status | None] = [None, *Status]
    if isinstance(rule, Status):
        return MappingProxyType(dict.fromkeys(starts, rule))
    return MappingProxyType({s: rule.get(s, s) for s in starts})


STATUS_TRANSITIONS: Final[Mapping[type[EventModel], Mapping[Status | None, Status | None]]] = (
    MappingProxyType({cls: _transitions(rule) for cls, rule in STATUS_RULES.items()})
)
""":data:`STATUS_RULES` spelt out: event class → {status before: status after}, for every
status (None included). A class not listed leaves the status as it was."""


_TRANSITIONS: Final[dict[type[EventModel], Mapping[Status | None, Status | None]]] = {
    cls: dict(table) for cls, table in STATUS_TRANSITIONS.items()
}
"""The same, as plain dicts: looked up once per event folded (a proxy's lookups cost more)."""


def next_status(status: Status | None, event_class: type[EventModel]) -> Status | None:
    """The status after an event of ``event_class`` (rules: :data:`STATUS_RULES`)."""
    table = _TRANSITIONS.get(event_class)
    return status if table is None else table[status]


@dataclass(frozen=True)
class Parties:
    """Who is involved in a referral: what entitlements and access are decided from.

    ``service_org`` is the link-worker service holding it now (None once it declined
    or the referral escalated); ``routed_to`` every service it was routed to, in order;
    ``providers`` every provider of an onward activity, in order of first referral.
    """

    referrer_org: str | None = None
    share_outcomes_with_referrer: bool = False
    service_org: str | None = None
    routed_to: tuple[str, ...] = ()
    declined_by: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()


_NO_KINDS: Mapping[SessionKind, int] = MappingProxyType({})


@dataclass(frozen=True)
class Referral:
    """One referral's state, folded from its events (times are the events' own, UTC-aware).

    Counters count events folded (a consumer that sees part of a history counts that
    part). ``minutes`` is the sum of sessions' ``duration_minutes``.
    """

    status: Status | None = None
    request: ReferralCreated | None = None
    parties: Parties = field(default_factory=Parties)
    routed_at: datetime | None = None
    accepted_at: datetime | None = None
    first_contact_at: datetime | None = None
    overdue: bool = False
    closed_at: datetime | None = None
    close_reason: ClosureReason | None = None
    declines: int = 0
    escalations: int = 0
    sessions: int = 0
    minutes: int = 0
    sessions_by_kind: Mapping[SessionKind, int] = field(default_factory=lambda: _NO_KINDS)
    minutes_by_kind: Mapping[SessionKind, int] = field(default_factory=lambda: _NO_KINDS)
    activities: int = 0
    attendances: int = 0
    missed: int = 0
    outcomes: int = 0
    last_event_at: datetime | None = None
    consent_withdrawn_at: datetime | None = None
    erased_at: datetime | None = None

    @property
    def created(self) -> bool:
        """Whether ``referral-created`` was folded."""
        return self.request is not None

    @property
    def closed(self) -> bool:
        return self.status is Status.CLOSED

    @property
    def holder_changes(self) -> int:
        """Events that set or cleared the holding service (routed, declined, escalated)."""
        return len(self.parties.routed_to) + self.declines + self.escalations


NEW: Final[Referral] = Referral()
"""The state before any event."""


def as_event(model: EventModel) -> LifecycleEvent:
    """``model`` typed as a lifecycle event; TypeError for anything else (e.g. an old
    version that did not go through :func:`schemas.registry.decode`)."""
    if type(model) in _EVENT_CLASS_SET:  # the usual case, without 14 isinstance checks
        return cast(LifecycleEvent, model)
    if isinstance(model, EVENT_CLASSES):
        return model
    raise TypeError(
        f"{type(model).__name__} ({model.event_type} v{model.version}) is not a lifecycle "
        "event: decode it with schemas.registry.decode"
    )


def occurred_at(event: LifecycleEvent) -> datetime | None:
    """When the event says it happened; None for events without a time of their own."""
    match event:
        case ReferralCreated():
            return event.referred_at
        case ReferralAccepted():
            return event.accepted_at
        case ReferralDeclined():
            return event.declined_at
        case FirstContactMade():
            return event.contacted_at
        case FirstContactOverdue():
            return event.due_by
        case SessionHeld():
            return event.held_at
        case ActivityReferred():
            return event.referred_at
        case ActivityAttended():
            return event.attended_at
        case OutcomeRecorded():
            return event.recorded_at
        case ReferralClosed():
            return event.closed_at
        case ConsentWithdrawn():
            return event.withdrawn_at
        case PersonErased():
            return event.erased_at
        case ReferralRouted() | ReferralEscalated():
            return None
        case _:
            assert_never(event)


def apply(state: Referral, event: LifecycleEvent, at: datetime | None = None) -> Referral:
    """The state after ``event``.

    ``at`` is when it happened as its envelope says (``ce_time``); without it the
    event's own time is used (:func:`occurred_at`). Milestone times and
    ``last_event_at`` come from it.
    """
    when = occurred_at(event) if at is None else at
    table = _TRANSITIONS.get(type(event))
    last = state.last_event_at
    if when is not None and (last is None or when > last):
        last = when
    # One new instance whose fields are the old one's, then this event's changes written
    # straight into it: views fold every copy they receive (tens of thousands a second),
    # and a keyword-argument copy per case was most of the fold's cost. Frozen instances
    # are never changed: only the one made here, before anyone else sees it.
    new = object.__new__(Referral)
    fields = new.__dict__
    fields.update(state.__dict__)
    fields["status"] = state.status if table is None else table[state.status]
    fields["last_event_at"] = last
    parties = _parties_after(state.parties, event)
    if parties is not None:
        fields["parties"] = parties
    match event:
        case ReferralCreated():
            fields["request"] = event
        case ReferralRouted():
            fields["routed_at"] = when
        case ReferralAccepted():
            fields["accepted_at"] = when
        case ReferralDeclined():
            fields["declines"] = state.declines + 1
        case ReferralEscalated():
            fields["escalations"] = state.escalations + 1
        case FirstContactMade():
            fields["first_contact_at"] = when
        case FirstContactOverdue():
            fields["overdue"] = True
        case SessionHeld():
            fields["sessions"] = state.sessions + 1
            fields["minutes"] = state.minutes + event.duration_minutes
            fields["sessions_by_kind"] = _plus(state.sessions_by_kind, event.kind, 1)
            fields["minutes_by_kind"] = _plus(
                state.minutes_by_kind, event.kind, event.duration_minutes
            )
        case ActivityReferred():
            fields["activities"] = state.activities + 1
        case ActivityAttended():
            if event.attended:
                fields["attendances"] = state.attendances + 1
            else:
                fields["missed"] = state.missed + 1
        case OutcomeRecorded():
            fields["outcomes"] = state.outcomes + 1
        case ReferralClosed():
            fields["closed_at"] = when
            fields["close_reason"] = event.reason
        case ConsentWithdrawn():
            # the referrer's outcome summary goes from here on (issue 16): the
            # distributor stops sharing, the referrer's view drops what it holds
            fields["consent_withdrawn_at"] = when
        case PersonErased():
            # the person's details are destroyed; the journey and its figures stay
            fields["erased_at"] = when
        case _:
            assert_never(event)
    return new


def _parties_after(p: Parties, event: LifecycleEvent) -> Parties | None:
    """The parties after ``event``; None when it leaves them as they were (most events)."""
    match event:
        case ReferralCreated():
            return _evolve(
                p,
                referrer_org=event.referrer_org,
                share_outcomes_with_referrer=event.consent.share_outcomes_with_referrer,
            )
        case ReferralRouted():
            return _evolve(
                p, service_org=event.service_org, routed_to=(*p.routed_to, event.service_org)
            )
        case ReferralDeclined():
            # the declining service no longer holds the referral: its entitlement and its
            # access to the person end here; the next referral-routed names the next one
            return _evolve(p, service_org=None, declined_by=(*p.declined_by, event.service_org))
        case ReferralEscalated():
            return _evolve(p, service_org=None)
        case ActivityReferred():
            if event.provider_org in p.providers:
                return None
            return _evolve(p, providers=(*p.providers, event.provider_org))
        case ConsentWithdrawn():
            return _evolve(p, share_outcomes_with_referrer=False)
        case (
            ReferralAccepted()
            | FirstContactMade()
            | FirstContactOverdue()
            | SessionHeld()
            | ActivityAttended()
            | OutcomeRecorded()
            | ReferralClosed()
            | PersonErased()
        ):
            return None
        case _:
            assert_never(event)


def fold(events: Iterable[LifecycleEvent], state: Referral = NEW) -> Referral:
    """``apply`` each event in order, from ``state`` (by default, before any event)."""
    for event in events:
        state = apply(state, event)
    return state


def apply_parties(parties: Parties, event: LifecycleEvent) -> Parties:
    """Only the parties after ``event``: for a consumer that keeps nothing else (the
    distributor's entitlements); the very step :func:`apply` takes for them."""
    after = _parties_after(parties, event)
    return parties if after is None else after


_State = TypeVar("_State", "Referral", Parties)


def _evolve(state: _State, **changes: Any) -> _State:
    """``dataclasses.replace`` without its per-field work: the fold runs once per event in
    every consumer (views apply tens of thousands a second), and replace was most of its
    cost. Frozen instances are never changed: a new one gets the old one's fields."""
    new = object.__new__(type(state))
    attrs = new.__dict__
    attrs.update(state.__dict__)
    attrs.update(changes)
    return new


def _plus(
    counts: Mapping[SessionKind, int], kind: SessionKind, n: int
) -> Mapping[SessionKind, int]:
    return MappingProxyType({**counts, kind: counts.get(kind, 0) + n})
