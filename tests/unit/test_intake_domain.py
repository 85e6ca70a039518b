"""Intake's pure decisions: who may refer whom, banded age, NHS number check digit."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from directory.model import REFERRER_KINDS, OrgKind
from services.intake.domain import age_band, age_on, decide_referral
from services.intake.requests import ReferralRequest, nhs_number_is_valid
from services.refusal import Forbidden, Invalid
from tests.conftest import referral_body

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def request(**overrides: Any) -> ReferralRequest:
    return ReferralRequest.model_validate(referral_body(**overrides))


def person(**overrides: Any) -> dict[str, Any]:
    return {**referral_body()["person"], **overrides}


def decide(req: ReferralRequest, kind: OrgKind = OrgKind.GP_PRACTICE, now: datetime = NOW) -> Any:
    return decide_referral(
        req,
        referrer_id="gp-1",
        referrer_kind=kind,
        referral_id=uuid4(),
        person_ref="p_pending",
        now=now,
    )


def test_a_valid_referral_becomes_referral_created_without_personal_data() -> None:
    model = decide(request(needs=["stress", "social-connection"], area="north"))
    assert model.event_type == "referral-created"
    data = model.model_dump(mode="json")
    assert data["referrer_org"] == "gp-1"
    assert data["referrer_kind"] == "gp-practice"
    assert data["needs"] == ["stress", "social-connection"]
    assert data["age_band"] == "35-49"  # born 1985-04-02, referred 2026-01-05: 40
    assert data["person_ref"] == "p_pending"
    text = str(data)
    for personal in ("Alex Example", "9434765919", "07700 900123", "prefers mornings", "1985"):
        assert personal not in text


@pytest.mark.parametrize("kind", sorted(REFERRER_KINDS | {OrgKind.LINK_WORKER_SERVICE}))
def test_every_referring_kind_may_refer(kind: OrgKind) -> None:
    assert decide(request(), kind).referrer_kind == kind.value


def test_a_commissioner_may_not_refer() -> None:
    with pytest.raises(Forbidden, match="commissioner"):
        decide(request(), OrgKind.COMMISSIONER)


def test_without_consent_to_a_link_worker_there_is_no_referral() -> None:
    req = request(consent={"share_with_link_worker": False})
    with pytest.raises(Invalid) as refused:
        decide(req)
    assert refused.value.field == "consent.share_with_link_worker"
    assert refused.value.status == 422


def test_referred_at_in_the_future_is_refused_beyond_clock_skew() -> None:
    with pytest.raises(Invalid) as refused:
        decide(request(referred_at=(NOW + timedelta(hours=1)).isoformat()))
    assert refused.value.field == "referred_at"
    assert "future" in refused.value.reason
    # a couple of minutes of clock skew between partner and server is tolerated
    assert decide(request(referred_at=(NOW + timedelta(minutes=2)).isoformat()))


def test_born_after_the_referral_is_refused() -> None:
    req = request(person=person(date_of_birth="2026-02-01"), referred_at="2026-01-05T10:00:00Z")
    with pytest.raises(Invalid) as refused:
        decide(req)
    assert refused.value.field == "person.date_of_birth"


def test_under_16_is_refused_on_the_day_before_the_16th_birthday() -> None:
    day_before = request(
        person=person(date_of_birth="2010-01-06"), referred_at="2026-01-05T10:00:00Z"
    )
    with pytest.raises(Invalid) as refused:
        decide(day_before)
    assert refused.value.field == "person.date_of_birth"
    assert "16+" in refused.value.reason and "15" in refused.value.reason
    birthday = request(
        person=person(date_of_birth="2010-01-05"), referred_at="2026-01-05T10:00:00Z"
    )
    assert decide(birthday).age_band == "16-24"


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (16, "16-24"),
        (24, "16-24"),
        (25, "25-34"),
        (34, "25-34"),
        (35, "35-49"),
        (49, "35-49"),
        (50, "50-64"),
        (64, "50-64"),
        (65, "65-74"),
        (74, "65-74"),
        (75, "75+"),
        (104, "75+"),
    ],
)
def test_age_band_boundaries(age: int, band: str) -> None:
    assert age_band(age) == band


def test_age_on_counts_birthdays() -> None:
    assert age_on(date(2000, 6, 15), date(2016, 6, 14)) == 15
    assert age_on(date(2000, 6, 15), date(2016, 6, 15)) == 16
    assert age_on(date(2000, 2, 29), date(2016, 2, 28)) == 15
    assert age_on(date(2000, 2, 29), date(2016, 3, 1)) == 16


@pytest.mark.parametrize("number", ["9434765919", "4010232137", "9999999999"])
def test_valid_nhs_numbers(number: str) -> None:
    assert nhs_number_is_valid(number)


@pytest.mark.parametrize(
    "number",
    [
        "9434765918",  # wrong check digit
        "9434765910",
        "1234567890",  # check digit would be 10: never issued
        "1234567891",
        "943476591",  # 9 digits
        "94347659190",  # 11 digits
        "943476591X",
        "",
        "943 476 5919",  # spaces are removed by the request model, not here
        "".join(chr(0xFF10 + int(d)) for d in "9434765919"),  # full-width: str.isdigit() says yes
    ],
)
def test_invalid_nhs_numbers(number: str) -> None:
    assert not nhs_number_is_valid(number)


def test_the_request_model_accepts_spaced_nhs_numbers_and_refuses_bad_ones() -> None:
    assert request().person.nhs_number == "9434765919"
    with pytest.raises(ValidationError) as refused:
        request(person=person(nhs_number="943 476 5918"))
    assert refused.value.errors()[0]["loc"] == ("person", "nhs_number")
    assert request(person=person(nhs_number=None)).person.nhs_number is None


def test_person_details_never_show_in_repr() -> None:
    req = request()
    assert "Alex" not in repr(req.person)
    assert "Alex" not in str(req.person)
    assert "9434765919" not in repr(req)


@pytest.mark.parametrize(
    ("overrides", "field"),
    # (an overlong area is now refused by the request model itself: same bounds as the event)
    [({"needs": ["stress", "stress"]}, "needs")],
)
def test_what_only_the_event_schema_refuses_is_invalid_not_a_crash(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(Invalid) as refused:
        decide(request(**overrides))
    assert refused.value.field == field
    assert "Value error" not in refused.value.reason
