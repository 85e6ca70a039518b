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

import hashlib
import hmac
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from schemas.envelope import CloudEvent

MILESTONES_FOR_REFERRER = frozenset(
    {
        "referral-created",
        "referral-routed",
        "referral-accepted",
        "referral-declined",
        "referral-escalated",
        "first-contact-made",
        "first-contact-overdue",
        "session-held",
        "activity-referred",
        "activity-attended",
        "referral-closed",
        "consent-withdrawn",  # the referrer's view drops the outcomes it holds (issue 16)
        "person-erased",
    }
)


@dataclass
class Entitlements:
    """What the distributor remembers of one referral to decide who sees its events."""

    referrer_org: str
    share_outcomes_with_referrer: bool
    created: dict[str, Any]
    service_org: str | None = None
    providers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Delivery:
    """One copy of an event for one organisation."""

    org_id: str
    event: CloudEvent


def pseudonym(secret: bytes, org_id: str, value: str) -> str:
    """Stable per commissioner, unlinkable across commissioners and to the real id."""
    return hmac.new(secret, f"{org_id}\x1f{value}".encode(), hashlib.sha256).hexdigest()


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
    return replace(
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
) -> list[Delivery]:
    """Every copy of ``event`` to send, given the entitlements *after* applying it.

    ``created_copy`` is the referral-created event, re-sent to an organisation that
    becomes entitled later (the routed service, a provider) so its view has the referral.
    """
    out = [Delivery(c, pseudonymise(event, secret, c)) for c in commissioners]
    if ent is None:
        return out
    t = event.type
    if t in MILESTONES_FOR_REFERRER or (
        t == "outcome-recorded" and ent.share_outcomes_with_referrer
    ):
        out.append(Delivery(ent.referrer_org, event))
    if t == "referral-routed":
        service = str(event.data["service_org"])
        if created_copy is not None and service != ent.referrer_org:
            out.append(Delivery(service, created_copy))
        out.append(Delivery(service, event))
    elif t == "referral-declined":
        out.append(Delivery(str(event.data["service_org"]), event))
    elif ent.service_org and t not in ("referral-created", "referral-escalated"):
        out.append(Delivery(ent.service_org, event))
    if t == "activity-referred":
        provider = str(event.data["provider_org"])
        if created_copy is not None and provider not in (ent.referrer_org, ent.service_org):
            out.append(Delivery(provider, created_copy))
        out.append(Delivery(provider, event))
    elif t == "activity-attended":
        out.append(Delivery(str(event.data["provider_org"]), event))
    elif t in ("referral-closed", "person-erased"):
        # providers learn that the referral ended: their view then withholds the person
        # (views.entitlement), and their role in it is over; or that the person is erased
        out.extend(Delivery(p, event) for p in ent.providers)
    return [
        d
        if d.org_id in commissioners
        else Delivery(d.org_id, partner_copy(d.event, secret, d.org_id))
        for d in _unique(out)
    ]


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
    return replace(event, data=data)


def _unique(deliveries_: list[Delivery]) -> list[Delivery]:
    """One copy per (organisation, event): an org can hold several roles at once."""
    seen: set[tuple[str, UUID, str]] = set()
    result = []
    for d in deliveries_:
        key = (d.org_id, d.event.id, d.event.type)
        if key not in seen:
            seen.add(key)
            result.append(d)
    return result
