"""Intake's decisions, free of I/O: may this organisation refer this person, and how.

``decide(state, command)`` takes a ``CreateReferral`` and what intake holds about it
(``IntakeState``: the referral's stream version, whether the area is the directory's,
an earlier use of the request's ``Idempotency-Key``, the person's pseudonym) and answers
``Create`` (the ``referral-created`` event to append), ``Replay`` (the key already
created a referral with this body: answer it again, store nothing) or a ``Refusal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from directory.model import REFERRER_KINDS, OrgKind
from eventstore.records import NewEvent, new_event
from infra.local_time import alliance_zone, local_date
from schemas.events.referral import ReferralCreated
from schemas.registry import latest_version, model_for
from services.intake.commands import CreateReferral
from services.refusal import Conflict, Forbidden, Invalid, Refusal

MIN_AGE = 16
CLOCK_SKEW = timedelta(minutes=5)
AGE_BANDS = ((24, "16-24"), (34, "25-34"), (49, "35-49"), (64, "50-64"), (74, "65-74"))
PENDING = "p_pending"
"""The pseudonym stand-in while the rules are checked before the person is looked up."""


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def age_band(age: int) -> str:
    """Banded age: enough for eligibility and reporting, too coarse to identify anyone."""
    for upper, band in AGE_BANDS:
        if age <= upper:
            return band
    return "75+"


@dataclass(frozen=True)
class Claim:
    """An earlier use of an ``Idempotency-Key``: the referral it created and the digest
    of that request's body (None: stored before digests were, taken as the same body)."""

    referral_id: UUID
    body_digest: str | None


@dataclass(frozen=True)
class IntakeState:
    """What intake holds that a ``CreateReferral`` is decided on.

    ``version``: the referral stream's version (0: new); ``area_known``: some
    organisation or activity of the directory has the area; ``previous``: the key's
    earlier use (None: no key, or this request claimed it); ``person_ref``: the
    person's pseudonym (reused for a known NHS number; ``PENDING`` if not looked up).
    """

    version: int = 0
    area_known: bool = True
    previous: Claim | None = None
    person_ref: str = PENDING


@dataclass(frozen=True)
class Create:
    """Append ``events`` (one ``referral-created``) to the new referral's stream."""

    referral_id: UUID
    events: list[NewEvent]


@dataclass(frozen=True)
class Replay:
    """The key already made ``referral_id`` from this body: answer it, store nothing."""

    referral_id: UUID


Decision = Create | Replay


def refusal(command: CreateReferral, *, zone: ZoneInfo | None = None) -> Refusal | None:
    """The first rule a referral breaks on its own, or None; cheap (no model is built),
    so the handler asks it before any I/O.

    A kind that may not refer (403); no consent to a link worker (422); ``referred_at``
    in the future beyond ``CLOCK_SKEW`` (422); born after ``referred_at`` or younger than
    ``MIN_AGE`` (422). Age is counted on the alliance's calendar (``zone``, default the
    alliance setting): the day of referral is the date of ``referred_at`` there, whatever
    offset the caller wrote it with.
    """
    refused = _age(command, zone)
    return refused if isinstance(refused, Refusal) else None


def _age(command: CreateReferral, zone: ZoneInfo | None) -> int | Refusal:
    kind = command.referrer_kind
    if kind not in REFERRER_KINDS and kind is not OrgKind.LINK_WORKER_SERVICE:
        return Forbidden(f"a {kind.value} organisation cannot make referrals")
    if not command.consent.share_with_link_worker:
        return Invalid(
            field="consent.share_with_link_worker",
            reason="the person must consent to being referred to a link worker",
        )
    if command.referred_at > command.received_at + CLOCK_SKEW:
        return Invalid(field="referred_at", reason="must not be in the future")
    born = command.person.date_of_birth
    referral_day = local_date(command.referred_at, zone or alliance_zone())
    if born > referral_day:
        return Invalid(field="person.date_of_birth", reason="is after referred_at")
    age = age_on(born, referral_day)
    if age < MIN_AGE:
        return Invalid(
            field="person.date_of_birth",
            reason=f"social prescribing is for people aged {MIN_AGE}+; the person was {age}",
        )
    return age


def referral_created(
    command: CreateReferral, person_ref: str = PENDING, *, zone: ZoneInfo | None = None
) -> ReferralCreated | Refusal:
    """The referral's ``referral-created`` model, or the refusal: the rules of
    ``refusal``, then what only the event schema checks, e.g. a need twice (422)."""
    age = _age(command, zone)
    if isinstance(age, Refusal):
        return age
    model = model_for(ReferralCreated.event_type, latest_version(ReferralCreated.event_type))
    try:
        made = model.model_validate(
            {
                "referral_id": command.referral_id,
                "person_ref": person_ref,
                "referrer_org": command.referrer_id,
                "referrer_kind": command.referrer_kind.value,
                "needs": [n.value for n in command.needs],
                "urgency": command.urgency,
                "consent": command.consent.model_dump(),
                "area": command.area,
                "age_band": age_band(age),
                "referred_at": command.referred_at,
            }
        )
    except ValidationError as exc:  # what only the event schema checks: needs twice, long area
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        return Invalid(str(err["msg"]).removeprefix("Value error, "), field=field)
    assert isinstance(made, ReferralCreated)  # the registry's latest is the class routing reads
    return made


def decide(
    state: IntakeState, command: CreateReferral, *, zone: ZoneInfo | None = None
) -> Decision | Refusal:
    """Create the referral, replay an earlier answer to the same key, or refuse.

    In this order: the rules of ``referral_created``; an area the directory does not
    know (422 ``area``: only the directory's vocabulary may travel on the bus); the
    ``Idempotency-Key`` used before with a different body (422 ``Idempotency-Key``, IETF
    draft-ietf-httpapi-idempotency-key) or the same body (``Replay``); a stream that
    already exists (409: referral ids are fresh, so only a bug gets here).
    """
    made = referral_created(command, state.person_ref, zone=zone)
    if isinstance(made, Refusal):
        return made
    if not state.area_known:
        return Invalid("not an area of the alliance directory (see GET /directory)", field="area")
    previous, key = state.previous, command.idempotency
    if previous is not None and key is not None:
        if previous.body_digest is not None and previous.body_digest != key.body_digest:
            return Invalid(
                "this Idempotency-Key was already used with a different request body",
                field="Idempotency-Key",
            )
        return Replay(previous.referral_id)
    if state.version != 0:
        return Conflict(f"referral {command.referral_id} exists already")
    event = new_event(
        made,
        actor=command.referrer_id,
        occurred_at=command.referred_at,
        correlation_id=command.referral_id,
    )
    return Create(command.referral_id, [event])
