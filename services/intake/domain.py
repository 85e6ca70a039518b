"""Intake's decisions, free of I/O: may this organisation refer this person, and how."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from directory.model import REFERRER_KINDS, OrgKind
from infra.local_time import alliance_zone, local_date
from schemas.registry import latest_version, model_for
from services.intake.requests import ReferralRequest
from services.refusal import Forbidden, Invalid

MIN_AGE = 16
CLOCK_SKEW = timedelta(minutes=5)
AGE_BANDS = ((24, "16-24"), (34, "25-34"), (49, "35-49"), (64, "50-64"), (74, "65-74"))


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def age_band(age: int) -> str:
    """Banded age: enough for eligibility and reporting, too coarse to identify anyone."""
    for upper, band in AGE_BANDS:
        if age <= upper:
            return band
    return "75+"


def decide_referral(
    request: ReferralRequest,
    *,
    referrer_id: str,
    referrer_kind: OrgKind,
    referral_id: UUID,
    person_ref: str,
    now: datetime,
    zone: ZoneInfo | None = None,
) -> Any:
    """Validate a referral and return the ``referral-created`` event model.

    Age is counted on the alliance's calendar (``zone``, default the alliance setting):
    the day of referral is the date of ``referred_at`` there, whatever offset the caller
    wrote it with.
    """
    if referrer_kind not in REFERRER_KINDS and referrer_kind is not OrgKind.LINK_WORKER_SERVICE:
        raise Forbidden(f"a {referrer_kind.value} organisation cannot make referrals")
    if not request.consent.share_with_link_worker:
        raise Invalid(
            field="consent.share_with_link_worker",
            reason="the person must consent to being referred to a link worker",
        )
    if request.referred_at > now + CLOCK_SKEW:
        raise Invalid(field="referred_at", reason="must not be in the future")
    born = request.person.date_of_birth
    referral_day = local_date(request.referred_at, zone or alliance_zone())
    if born > referral_day:
        raise Invalid(field="person.date_of_birth", reason="is after referred_at")
    age = age_on(born, referral_day)
    if age < MIN_AGE:
        raise Invalid(
            field="person.date_of_birth",
            reason=f"social prescribing is for people aged {MIN_AGE}+; the person was {age}",
        )
    model = model_for("referral-created", latest_version("referral-created"))
    try:
        return model.model_validate(
            {
                "referral_id": referral_id,
                "person_ref": person_ref,
                "referrer_org": referrer_id,
                "referrer_kind": referrer_kind.value,
                "needs": [n.value for n in request.needs],
                "urgency": request.urgency,
                "consent": request.consent.model_dump(),
                "area": request.area,
                "age_band": age_band(age),
                "referred_at": request.referred_at,
            }
        )
    except ValidationError as exc:  # what only the event schema checks: needs twice, long area
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise Invalid(str(err["msg"]).removeprefix("Value error, "), field=field) from None
