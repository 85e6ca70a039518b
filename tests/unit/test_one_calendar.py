"""One calendar: every date derived from an instant is read in the alliance's zone.

Property tests over offsets and the days the clocks change in London (2026-03-29 and
2026-10-25): the same instant written with any offset gives the same date, age and
report boundary, and a date without a zone means local midnight *of that date* (BST in
summer, GMT in winter), whatever the machine's ``TZ`` or today's offset.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from directory.model import OrgKind
from infra.local_time import (
    NotADate,
    add_local_days,
    alliance_zone,
    local_date,
    month_of,
    parse_instant,
)
from referralnet.settings import Settings
from services.intake.commands import from_request
from services.intake.domain import referral_created
from services.intake.requests import ReferralRequest
from services.refusal import Invalid, Refusal
from tests.conftest import referral_body
from views.report import report_range

LONDON = ZoneInfo("Europe/London")
# Every offset in use on Earth is a multiple of 15 minutes between -12:00 and +14:00.
offsets = st.integers(min_value=-12 * 4, max_value=14 * 4).map(
    lambda q: timezone(timedelta(minutes=15 * q))
)
# Instants within two days either side of London's 2026 clock changes, and any in 2026.
dst_days = st.sampled_from([datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 10, 25, tzinfo=UTC)])
near_dst = st.builds(
    lambda day, seconds: day + timedelta(seconds=seconds),
    dst_days,
    st.integers(min_value=-2 * 86400, max_value=2 * 86400),
)
instants = st.one_of(
    near_dst,
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    ),
)


@given(instants, offsets)
def test_the_same_instant_with_any_offset_has_one_local_date(instant: datetime, tz: Any) -> None:
    written = instant.astimezone(tz)
    assert local_date(written, LONDON) == local_date(instant, LONDON)
    assert month_of(written, LONDON) == month_of(instant, LONDON)


@given(instants)
def test_the_local_date_is_londons_wall_clock_date(instant: datetime) -> None:
    wall = instant.astimezone(LONDON)
    assert local_date(instant, LONDON) == wall.date()
    # BST (+1) from the last Sunday of March to the last Sunday of October, else GMT.
    assert wall.utcoffset() in (timedelta(0), timedelta(hours=1))


def test_naive_instants_have_no_date() -> None:
    with pytest.raises(ValueError, match="offset"):
        local_date(datetime(2026, 7, 1), LONDON)


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-07-01", datetime(2026, 6, 30, 23, 0, tzinfo=UTC)),  # BST in July
        ("2026-01-01", datetime(2026, 1, 1, 0, 0, tzinfo=UTC)),  # GMT in January
        ("2026-03-29", datetime(2026, 3, 29, 0, 0, tzinfo=UTC)),  # clocks go forward at 01:00
        ("2026-03-30", datetime(2026, 3, 29, 23, 0, tzinfo=UTC)),
        ("2026-10-25", datetime(2026, 10, 24, 23, 0, tzinfo=UTC)),  # clocks go back at 02:00
        ("2026-10-26", datetime(2026, 10, 26, 0, 0, tzinfo=UTC)),
        ("2026-07-01T09:30", datetime(2026, 7, 1, 8, 30, tzinfo=UTC)),
        ("2026-07-01 09:30:15", datetime(2026, 7, 1, 8, 30, 15, tzinfo=UTC)),
        ("2026-07-01T09:30:00Z", datetime(2026, 7, 1, 9, 30, tzinfo=UTC)),
        ("2026-07-01T09:30:00+02:00", datetime(2026, 7, 1, 7, 30, tzinfo=UTC)),
    ],
)
def test_text_without_a_zone_is_the_alliances_wall_clock(text: str, utc: datetime) -> None:
    assert parse_instant(text, LONDON) == utc


@pytest.mark.parametrize(
    "text",
    ["20260701", "1700000000", "2026", "2026-13-01", "2026-02-30", "tomorrow", "0001-01-01", ""],
)
def test_bare_numbers_and_nonsense_are_not_dates(text: str) -> None:
    with pytest.raises(NotADate):
        parse_instant(text, LONDON)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)))
def test_a_date_starts_at_local_midnight_of_that_date(day: date) -> None:
    start = parse_instant(day.isoformat(), LONDON)
    assert local_date(start, LONDON) == day
    assert local_date(start - timedelta(microseconds=1), LONDON) == day - timedelta(days=1)


def test_a_week_later_keeps_the_wall_clock_across_the_change() -> None:
    friday = datetime(2026, 3, 27, 9, 0, tzinfo=LONDON)  # GMT
    later = add_local_days(friday, 7, LONDON)
    assert later.astimezone(LONDON).hour == 9
    assert later.astimezone(UTC) - friday.astimezone(UTC) == timedelta(days=7, hours=-1)


# --- the report's range (GET /report and `referralnet report` share report_range) ---


def test_a_date_only_range_is_local_midnight_to_local_midnight() -> None:
    start, end = report_range("2026-07-01", "2026-08-01", LONDON)
    assert start == datetime(2026, 6, 30, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 7, 31, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("date_from", "date_to", "field"),
    [
        ("2026-07-01", "2026-07-01", "to"),
        ("2026-08-01", "2026-07-01", "to"),
        ("1700000000", None, "from"),
        (None, "20260701", "to"),
        ("yesterday", "2026-07-01", "from"),
        ("2026-07-01T00:00+01:00", "2026-06-30T23:00Z", "to"),  # the same instant: empty
        ("2026-10-01T00:00:00+16:00", None, "from"),  # beyond ±15:59, as the body fields
        (None, "2026-10-01T00:00-23:59", "to"),
    ],
)
def test_a_nonsense_range_names_its_field(
    date_from: str | None, date_to: str | None, field: str
) -> None:
    with pytest.raises(Invalid) as refused:
        report_range(date_from, date_to, LONDON)
    assert refused.value.field == field


def test_the_zone_is_a_setting_defaulting_to_london(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFERRALNET_TIMEZONE", raising=False)
    assert alliance_zone().key == "Europe/London"
    assert Settings.from_env().timezone == "Europe/London"
    monkeypatch.setenv("REFERRALNET_TIMEZONE", "Europe/Dublin")
    assert alliance_zone().key == "Europe/Dublin"
    assert report_range("2026-07-01", None)[0] == datetime(2026, 6, 30, 23, 0, tzinfo=UTC)
    monkeypatch.setenv("REFERRALNET_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValueError, match="REFERRALNET_TIMEZONE"):
        Settings.from_env()


# --- age at referral ---


def decide_at(referred_at: str, born: str = "2010-06-15") -> Any:
    body = referral_body(referred_at=referred_at)
    body["person"]["date_of_birth"] = born
    made = referral_created(
        from_request(
            ReferralRequest.model_validate(body),
            referral_id=uuid4(),
            referrer_id="gp-1",
            referrer_kind=OrgKind.GP_PRACTICE,
            received_at=datetime(2030, 1, 1, tzinfo=UTC),
        ),
        zone=LONDON,
    )
    if isinstance(made, Refusal):
        raise made
    return made


def test_the_sixteenth_birthday_is_a_london_date_whatever_the_offset() -> None:
    # 00:30 BST on 15 June is 23:30 UTC on 14 June: the same instant, the same age.
    assert decide_at("2026-06-15T00:30:00+01:00").age_band == "16-24"
    assert decide_at("2026-06-14T23:30:00Z").age_band == "16-24"
    with pytest.raises(Invalid, match="was 15"):
        decide_at("2026-06-14T22:30:00Z")  # 23:30 BST on 14 June


@given(near_dst, offsets)
def test_age_at_referral_does_not_depend_on_the_offset(instant: datetime, tz: Any) -> None:
    born = (instant.astimezone(LONDON) - timedelta(days=16 * 365 + 4)).date().isoformat()
    outcomes = []
    for written in (instant, instant.astimezone(tz)):
        try:
            outcomes.append(decide_at(written.isoformat(), born).age_band)
        except Invalid as exc:
            outcomes.append(exc.reason)
    assert outcomes[0] == outcomes[1]


def test_the_first_contact_sla_counts_local_days_across_the_clock_change() -> None:
    from uuid import UUID

    from services.outcomes.domain import Case, Rules, first_contact_due

    routed = datetime(2026, 10, 23, 9, 0, tzinfo=LONDON)  # Friday 09:00 BST
    case = Case(UUID(int=1), "gp", routed, "lw", "routed", routed, None, None, False, None)
    due = first_contact_due(
        case, Rules(7, ZoneInfo("Europe/London"))
    )  # 7 days: Friday 09:00 GMT, 25 hours later in UTC terms
    assert due.astimezone(LONDON).replace(tzinfo=None) == datetime(2026, 10, 30, 9, 0)
