"""NHS numbers: the check digit, and the numbers that pass it but identify nobody."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.intake.nhs_number import check_digit_is_valid, identifies_a_person
from services.intake.requests import Person


def with_check_digit(nine: str) -> str | None:
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return None if check == 10 else nine + str(check)


PLACEHOLDERS = [d * 10 for d in "0123456789" if check_digit_is_valid(d * 10)]


def test_every_same_digit_number_that_passes_the_check_is_refused() -> None:
    assert {"0000000000", "1111111111", "9999999999"} <= set(PLACEHOLDERS)
    for number in PLACEHOLDERS:
        assert not identifies_a_person(number)


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("9999999999", "placeholder"),
        ("0000000000", "placeholder"),
        ("111 111 1111", "placeholder"),
        ("9990000018", "test range"),  # 999 000 0018: passes the check, never issued
        ("0000000019", "below every issued"),
        ("9434765918", "check digit"),
    ],
)
def test_the_request_refuses_numbers_that_identify_nobody(number: str, why: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Person(name="A", date_of_birth="1980-01-01", nhs_number=number)  # type: ignore[arg-type]
    error = refused.value.errors()[0]
    assert error["loc"] == ("nhs_number",)
    assert why in error["msg"]


@pytest.mark.parametrize("number", ["943 476 5919", "4010232137", "600 000 0014"])
def test_issued_range_numbers_are_accepted(number: str) -> None:
    person = Person(name="A", date_of_birth="1980-01-01", nhs_number=number)  # type: ignore[arg-type]
    assert person.nhs_number is not None and identifies_a_person(person.nhs_number)


@given(st.from_regex(r"999[0-9]{6}", fullmatch=True))
def test_nothing_in_the_test_range_identifies_anyone(nine: str) -> None:
    number = with_check_digit(nine)
    if number is not None:
        assert check_digit_is_valid(number) and not identifies_a_person(number)
