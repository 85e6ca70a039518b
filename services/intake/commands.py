"""What a referrer asks intake to do: one small immutable value per request.

Built by the entry point (``api``) from a validated request (``from_request``); carried
to ``handlers.handle``; decided on by ``domain.decide``. Times are world times
(timezone-aware); ``referrer_id`` is the acting organisation's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from directory.model import OrgKind
from schemas.events import Need
from schemas.events.referral import Urgency
from services.intake.idempotency import digest, request_digest
from services.intake.requests import Consent, Person, ReferralRequest


@dataclass(frozen=True)
class IdempotencyKey:
    """An ``Idempotency-Key`` header, kept only as SHA-256 digests of the key and of the
    request body as parsed (``services.intake.idempotency``)."""

    key_digest: str
    body_digest: str


@dataclass(frozen=True)
class CreateReferral:
    """Refer ``person`` (kept in intake, encrypted) for ``needs`` in ``area``.

    ``referral_id`` is chosen by the entry point (a fresh UUID); ``received_at`` is when
    the request arrived (``referred_at`` may not be later than it, give or take the
    allowed clock skew). ``idempotency``: None without the header.
    """

    referral_id: UUID
    referrer_id: str
    referrer_kind: OrgKind
    person: Person
    needs: tuple[Need, ...]
    consent: Consent
    area: str
    urgency: Urgency
    referred_at: datetime
    received_at: datetime
    idempotency: IdempotencyKey | None = None


Command = CreateReferral


def from_request(
    body: ReferralRequest,
    *,
    referral_id: UUID,
    referrer_id: str,
    referrer_kind: OrgKind,
    received_at: datetime,
    idempotency_key: str | None = None,
) -> CreateReferral:
    """The command a ``POST /referrals`` body (and its optional key header) asks for."""
    key = IdempotencyKey(digest(idempotency_key), request_digest(body)) if idempotency_key else None
    return CreateReferral(
        referral_id=referral_id,
        referrer_id=referrer_id,
        referrer_kind=referrer_kind,
        person=body.person,
        needs=tuple(body.needs),
        consent=body.consent,
        area=body.area,
        urgency=body.urgency,
        referred_at=body.referred_at,
        received_at=received_at,
        idempotency=key,
    )
