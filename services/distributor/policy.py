"""Who may see what (DESIGN §4), as a pure function of a referral's entitlements.

| role for a referral         | receives                                                  |
| referrer                    | every milestone; outcomes only while the person consents  |
| link-worker service routed  | everything from routing on, plus the referral itself      |
| a service that declined     | the journey up to and including its own decline           |
| provider of an activity     | the referral, its own activity-referred and attendance,   |
|                             | and referral-closed (its access to the person ends there)  |
| commissioner                | everything, pseudonymised: no referral id, no person_ref  |

Partners' copies of ``referral-created`` carry a ``person_ref`` pseudonymised per
partner and referral (``partner_copy``): nothing a partner holds links two referrals of
one person, so nothing can confirm a guessed NHS number.

Redaction substitutes identifiers rather than dropping fields, so every copy still
validates against its published schema.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, assert_never
from uuid import UUID

from bus.tracking import Rejected
from domain import lifecycle
from domain.lifecycle import LifecycleEvent, Parties
from schemas.envelope import CloudEvent, evolve, from_kafka, to_kafka
from schemas.events import (
    ActivityAttended,
    ActivityReferred,
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
)
from schemas.registry import decode, parse_dataschema

HANDLES: Final[frozenset[type[EventModel]]] = frozenset(lifecycle.EVENT_CLASSES)
"""Every journey event reaches the commissioners, and each has a rule below for the
partners (see ``deliveries``)."""

IGNORES: Final[frozenset[type[EventModel]]] = frozenset()

MILESTONES_FOR_REFERRER: Final[frozenset[type[EventModel]]] = frozenset(
    {
        ReferralCreated,
        ReferralRouted,
        ReferralAccepted,
        ReferralDeclined,
        ReferralEscalated,
        FirstContactMade,
        FirstContactOverdue,
        SessionHeld,
        ActivityReferred,
        ActivityAttended,
        ReferralClosed,
        ConsentWithdrawn,  # the referrer's view drops the outcomes it holds (issue 16)
        PersonErased,
    }
)
"""What the referrer always receives; ``outcome-recorded`` only with the person's consent."""

RESENDS_CREATED: Final[frozenset[type[EventModel]]] = frozenset({ReferralRouted, ActivityReferred})
"""Events that make an organisation newly entitled: it also gets ``referral-created``."""


@dataclass(frozen=True)
class Entitlements:
    """What the distributor remembers of one referral to decide who sees its events: the
    lifecycle's parties (``domain.lifecycle.Parties``) and the ``referral-created`` to
    re-send (``created``: its Kafka record as JSON)."""

    referrer_org: str
    share_outcomes_with_referrer: bool
    created: dict[str, Any]
    service_org: str | None = None
    providers: tuple[str, ...] = ()

    @property
    def parties(self) -> Parties:
        return Parties(
            referrer_org=self.referrer_org,
            share_outcomes_with_referrer=self.share_outcomes_with_referrer,
            service_org=self.service_org,
            providers=tuple(self.providers),
        )

    def after(self, model: LifecycleEvent) -> Entitlements:
        """The entitlements once ``model`` happened (the lifecycle's rules for parties);
        ``self`` when it changes nothing, so callers write only what changed."""
        p = lifecycle.apply_parties(self.parties, model)
        if (
            p.service_org == self.service_org
            and p.providers == tuple(self.providers)
            and p.share_outcomes_with_referrer == self.share_outcomes_with_referrer
        ):
            return self
        return Entitlements(
            self.referrer_org,
            p.share_outcomes_with_referrer,
            self.created,
            service_org=p.service_org,
            providers=p.providers,
        )


def freeze(event: CloudEvent) -> dict[str, Any]:
    """``event`` as JSON to keep in a row (its Kafka record), for :func:`thaw`."""
    key, value, headers = to_kafka(event)
    return {
        "key": key.decode(),
        "value": value.decode(),
        "headers": [[k, v.decode()] for k, v in headers],
    }


def thaw(frozen: dict[str, Any]) -> CloudEvent:
    """The event :func:`freeze` kept."""
    return from_kafka(
        frozen["key"].encode(),
        frozen["value"].encode(),
        [(k, v.encode()) for k, v in frozen["headers"]],
    )


def model_of(event: CloudEvent) -> LifecycleEvent:
    """The typed, upcast data of ``event`` (SchemaError if it does not validate)."""
    _, version = parse_dataschema(event.dataschema)
    return lifecycle.as_event(decode(event.type, version, event.data))


def distribute(
    ent: Entitlements | None,
    event: CloudEvent,
    model: LifecycleEvent,
    commissioners: list[str],
    secret: bytes,
    thaw_created: Callable[[Entitlements], CloudEvent] | None = None,
    keep_created: Callable[[CloudEvent], dict[str, Any]] = freeze,
) -> tuple[Entitlements, list[Delivery]]:
    """The distributor's whole decision for one event: the referral's entitlements after
    it, and every copy to send. Pure; the running distributor and the in-memory replay
    (``bench.distribution``) both call it.

    ``ent`` is what was known before (None: nothing). ``keep_created`` turns the
    ``referral-created`` into what ``Entitlements.created`` keeps (default: :func:`freeze`)
    and ``thaw_created`` gives it back (default: :func:`thaw` of ``ent.created``); a caller
    that keeps the events themselves passes both.
    Raises ``Rejected`` for an event of a referral that was never created.
    """
    ent = entitled(ent, event, model, keep_created)
    created_copy = None
    if type(model) in RESENDS_CREATED:
        created_copy = (thaw_created or _thaw_of)(ent)
    return ent, deliveries(event, ent, commissioners, secret, created_copy, model=model)


def entitled(
    ent: Entitlements | None,
    event: CloudEvent,
    model: LifecycleEvent,
    keep_created: Callable[[CloudEvent], dict[str, Any]] = freeze,
) -> Entitlements:
    """The referral's entitlements once ``event`` (decoded: ``model``) happened: the half
    of :func:`distribute` that decides what the distributor remembers. Pure; also what
    ``referralnet projections`` folds the stores with to check ``distributor.entitlements``.

    ``ent`` is what was known before (None: nothing); the result is ``ent`` itself when
    the event changes nothing. Raises ``Rejected`` for an event of a referral that was
    never created (the distributor dead-letters it, remembering nothing).
    """
    if ent is not None:
        return ent.after(model)
    if not isinstance(model, ReferralCreated):
        raise Rejected(f"{event.type} for referral {event.subject}, which was never created")
    return Entitlements(
        referrer_org=model.referrer_org,
        share_outcomes_with_referrer=model.consent.share_outcomes_with_referrer,
        created=keep_created(event),
    )


def _thaw_of(ent: Entitlements) -> CloudEvent:
    return thaw(ent.created)


@dataclass(frozen=True)
class Delivery:
    """One copy of an event for one organisation."""

    org_id: str
    event: CloudEvent


def pseudonym(secret: bytes, org_id: str, value: str) -> str:
    """Stable per commissioner, unlinkable across commissioners and to the real id."""
    # hmac.digest: the one-shot HMAC (OpenSSL's), the same bytes as hmac.new(...).digest()
    # without building an HMAC object; three of these per commissioner copy
    return hmac.digest(secret, f"{org_id}\x1f{value}".encode(), "sha256").hex()


def pseudonymise(event: CloudEvent, secret: bytes, org_id: str) -> CloudEvent:
    """The commissioner's copy: referral id and person_ref replaced by pseudonyms.

    The correlation id is the referral id too, so it is replaced the same way.
    """
    case = UUID(pseudonym(secret, org_id, event.subject)[:32])
    correlation = UUID(pseudonym(secret, org_id, str(event.correlationid))[:32])
    data = dict(event.data)
    if "referral_id" in data:
        data["referral_id"] = str(case)
    if "person_ref" in data:
        data["person_ref"] = "p_" + pseudonym(secret, org_id, str(data["person_ref"]))[:20]
    # The event and causation ids are re-keyed too: kept, they would let anyone who can
    # also read referral-events link the copy back to the referral.
    return evolve(
        event,
        id=_pseudo_uuid(secret, org_id, str(event.id)),
        subject=str(case),
        data=data,
        correlationid=correlation,
        causationid=(
            _pseudo_uuid(secret, org_id, str(event.causationid)) if event.causationid else None
        ),
    )


def _pseudo_uuid(secret: bytes, org_id: str, value: str) -> UUID:
    return UUID(pseudonym(secret, org_id, value)[:32])


def deliveries(
    event: CloudEvent,
    ent: Entitlements | None,
    commissioners: list[str],
    secret: bytes,
    created_copy: CloudEvent | None = None,
    *,
    model: LifecycleEvent | None = None,
) -> list[Delivery]:
    """Every copy of ``event`` to send, given the entitlements *after* applying it.

    ``created_copy`` is the referral-created event, re-sent to an organisation that
    becomes entitled later (the routed service, a provider) so its view has the referral.
    ``model`` is the event's decoded data when the caller has it (else decoded here).
    """
    out = [Delivery(c, pseudonymise(event, secret, c)) for c in commissioners]
    if ent is None:
        return out
    m = model_of(event) if model is None else model
    if type(m) in MILESTONES_FOR_REFERRER or (
        isinstance(m, OutcomeRecorded) and ent.share_outcomes_with_referrer
    ):
        out.append(Delivery(ent.referrer_org, event))
    for org, copy in _newly_entitled(m, ent, created_copy):
        out.append(Delivery(org, copy))
    out.extend(Delivery(org, event) for org in _partners(m, ent))
    return [
        d
        if d.org_id in commissioners
        else Delivery(d.org_id, partner_copy(d.event, secret, d.org_id))
        for d in _unique(out)
    ]


def _newly_entitled(
    m: LifecycleEvent, ent: Entitlements, created_copy: CloudEvent | None
) -> list[tuple[str, CloudEvent]]:
    """The referral-created copy for an organisation this event makes entitled."""
    if created_copy is None:
        return []
    if isinstance(m, ReferralRouted) and m.service_org != ent.referrer_org:
        return [(m.service_org, created_copy)]
    if isinstance(m, ActivityReferred) and m.provider_org not in (
        ent.referrer_org,
        ent.service_org,
    ):
        return [(m.provider_org, created_copy)]
    return []


def _partners(m: LifecycleEvent, ent: Entitlements) -> list[str]:
    """The link-worker services and providers that receive the event itself."""
    holder = [ent.service_org] if ent.service_org else []
    match m:
        case ReferralRouted() | ReferralDeclined():
            # the service routed to, and the one declining (its history ends there)
            return [m.service_org]
        case ReferralCreated() | ReferralEscalated():
            return []
        case ActivityReferred() | ActivityAttended():
            return [*holder, m.provider_org]
        case ReferralClosed() | PersonErased():
            # providers learn that the referral ended: their view then withholds the
            # person (views.entitlement), and their role in it is over; or that the
            # person was erased (issue 16)
            return [*holder, *ent.providers]
        case (
            ReferralAccepted()
            | FirstContactMade()
            | FirstContactOverdue()
            | SessionHeld()
            | OutcomeRecorded()
            | ConsentWithdrawn()
        ):
            return holder
        case _:
            assert_never(m)


def partner_copy(event: CloudEvent, secret: bytes, org_id: str) -> CloudEvent:
    """A partner's copy: ``person_ref`` replaced by a pseudonym of (partner, referral).

    The real pseudonym links every referral of one NHS number; handed to partners it let
    an organisation confirm an NHS number (refer with a guessed number, compare the
    pseudonym with those in its view). Per partner *and referral* it links nothing.
    Events without ``person_ref`` are passed through untouched.
    """
    if "person_ref" not in event.data:
        return event
    scope = f"{org_id}\x1f{event.subject}"
    data = {
        **event.data,
        "person_ref": "p_" + pseudonym(secret, scope, str(event.data["person_ref"]))[:20],
    }
    return evolve(event, data=data)


def _unique(deliveries_: list[Delivery]) -> list[Delivery]:
    """One copy per (organisation, event): an org can hold several roles at once."""
    seen: set[tuple[str, int, str]] = set()
    result = []
    for d in deliveries_:
        key = (d.org_id, d.event.id.int, d.event.type)  # the int: UUID hashes in Python
        if key not in seen:
            seen.add(key)
            result.append(d)
    return result
