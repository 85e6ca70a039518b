"""Intake's pure decisions: who may refer whom, banded age, NHS number check digit, and
``decide`` over intake's state (unknown area, ``Idempotency-Key`` replays, a stream that
exists). Domain speed: no I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from directory.model import REFERRER_KINDS, OrgKind
from services.intake.commands import CreateReferral, from_request
from services.intake.domain import (
    Claim,
    Create,
    IntakeState,
    Replay,
    age_band,
    age_on,
    referral_created,
)
from services.intake.domain import decide as decide_on
from services.intake.domain import refusal as domain_refusal
from services.intake.requests import ReferralRequest, nhs_number_is_valid
from services.refusal import Conflict, Forbidden, Invalid, Refusal
from tests.conftest import referral_body

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def request(**overrides: Any) -> ReferralRequest:
    return ReferralRequest.model_validate(referral_body(**overrides))


def person(**overrides: Any) -> dict[str, Any]:
    return {**referral_body()["person"], **overrides}


def command(
    req: ReferralRequest,
    kind: OrgKind = OrgKind.GP_PRACTICE,
    now: datetime = NOW,
    key: str | None = None,
) -> CreateReferral:
    return from_request(
        req,
        referral_id=uuid4(),
        referrer_id="gp-1",
        referrer_kind=kind,
        received_at=now,
        idempotency_key=key,
    )


def decide(req: ReferralRequest, kind: OrgKind = OrgKind.GP_PRACTICE, now: datetime = NOW) -> Any:
    """The ``referral-created`` model for ``req``; raises the refusal."""
    made = referral_created(command(req, kind, now))
    if isinstance(made, Refusal):
        raise made
    return made


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


def test_decide_creates_one_referral_created_by_the_referrer_on_its_own_stream() -> None:
    cmd = command(request(area="north"))
    decision = decide_on(IntakeState(person_ref="p_abc"), cmd)
    assert isinstance(decision, Create)
    assert decision.referral_id == cmd.referral_id
    [event] = decision.events
    assert event.type == "referral-created"
    assert event.actor == "gp-1"
    assert event.correlation_id == cmd.referral_id
    assert event.occurred_at == cmd.referred_at
    assert event.data["person_ref"] == "p_abc"
    assert event.data["referral_id"] == str(cmd.referral_id)


def test_an_area_the_directory_does_not_know_is_refused_after_the_rules() -> None:
    refused = decide_on(IntakeState(area_known=False), command(request(area="atlantis")))
    assert isinstance(refused, Invalid)
    assert refused.field == "area" and "directory" in refused.reason
    # the referral's own rules come first, as they did before any lookup
    no_consent = request(area="atlantis", consent={"share_with_link_worker": False})
    first = decide_on(IntakeState(area_known=False), command(no_consent))
    assert isinstance(first, Invalid) and first.field == "consent.share_with_link_worker"


def test_an_idempotency_key_used_with_the_same_body_replays_the_first_referral() -> None:
    cmd = command(request(), key="k-1")
    assert cmd.idempotency is not None
    earlier = uuid4()
    decision = decide_on(IntakeState(previous=Claim(earlier, cmd.idempotency.body_digest)), cmd)
    assert decision == Replay(earlier)
    # a key stored before body digests were (NULL) counts as the same body
    assert decide_on(IntakeState(previous=Claim(earlier, None)), cmd) == Replay(earlier)


def test_an_idempotency_key_used_with_a_different_body_is_invalid() -> None:
    first = command(request(area="north"), key="k-1")
    second = command(request(area="south"), key="k-1")
    assert first.idempotency is not None and second.idempotency is not None
    assert first.idempotency.key_digest == second.idempotency.key_digest
    assert first.idempotency.body_digest != second.idempotency.body_digest
    claim = Claim(first.referral_id, first.idempotency.body_digest)
    refused = decide_on(IntakeState(previous=claim), second)
    assert isinstance(refused, Invalid) and refused.field == "Idempotency-Key"
    assert refused.status == 422


def test_the_key_and_body_are_kept_only_as_digests_and_body_order_does_not_matter() -> None:
    body = referral_body()
    reordered = ReferralRequest.model_validate(dict(reversed(list(body.items()))))
    a = command(ReferralRequest.model_validate(body), key="secret-key")
    b = command(reordered, key="secret-key")
    assert a.idempotency == b.idempotency
    assert a.idempotency is not None and "secret-key" not in repr(a.idempotency)


def test_a_stream_that_exists_already_is_a_conflict_not_a_second_creation() -> None:
    refused = decide_on(IntakeState(version=1), command(request()))
    assert isinstance(refused, Conflict)


def test_the_early_check_refuses_what_the_rules_refuse_and_leaves_the_schema_to_decide() -> None:
    assert domain_refusal(command(request())) is None
    young = domain_refusal(command(request(person=person(date_of_birth="2012-01-01"))))
    assert isinstance(young, Invalid) and young.field == "person.date_of_birth"
    assert isinstance(domain_refusal(command(request(), OrgKind.COMMISSIONER)), Forbidden)
    twice = command(request(needs=["stress", "stress"]))
    assert domain_refusal(twice) is None  # only the event schema knows
    refused = decide_on(IntakeState(), twice)
    assert isinstance(refused, Invalid) and refused.field == "needs"
