"""Which NHS numbers identify a person, and may therefore link two referrals.

A number is accepted when it has the NHS format (10 ASCII digits), its modulus-11 check
digit is right, and it is not one of the numbers that pass the check but identify
nobody:

- **placeholders**: the same digit ten times (``0000000000``, ``1111111111``,
  ``9999999999`` ...), typed where the number is not known;
- **the test range** ``999 000 0000``-``999 999 9999``, reserved for test and demo data
  and never issued to a patient (NHS Digital's synthetic/test data guidance; summarised
  with the issued ranges at https://en.wikipedia.org/wiki/NHS_number and in the
  ``nhs-number`` crate's ``docs/ranges``);
- **below every issued range**: numbers under ``010 100 0000`` (the lowest Scottish CHI
  number; England, Wales and the Isle of Man issue 3xx/4xx/6xx-7xx, Northern Ireland
  320-399) are issued by no UK health service.

Decision (docs/identity.md): such numbers are *refused* with 422 naming
``person.nhs_number``, rather than stored and ignored, so the referrer learns at once
that the number identifies nobody and can leave it out (the field is optional) or
correct it. ``pii.person_ref_for`` also refuses to link on anything this module does not
accept, so no stored or future path can join two people on a placeholder.
"""

from __future__ import annotations

TEST_RANGE = range(999_000_0000, 999_999_9999 + 1)
LOWEST_ISSUED = 10_100_0000  # 010 100 0000, the lowest CHI number


def check_digit_is_valid(number: str) -> bool:
    """Format (10 ASCII digits) and the modulus-11 check digit."""
    if len(number) != 10 or not (number.isascii() and number.isdigit()):
        return False
    total = sum(int(d) * w for d, w in zip(number[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(number[9])


def nhs_number_problem(number: str) -> str | None:
    """Why ``number`` (spaces already removed) does not identify a person, or None."""
    if not check_digit_is_valid(number):
        return "not a valid NHS number (10 digits with a modulus-11 check digit)"
    if len(set(number)) == 1:
        return "a placeholder (the same digit ten times), not a person's NHS number; omit it"
    if int(number) in TEST_RANGE:
        return "in the test range 999 000 0000-999 999 9999, never issued to a patient; omit it"
    if int(number) < LOWEST_ISSUED:
        return "below every issued NHS/CHI number range, so it identifies nobody; omit it"
    return None


def identifies_a_person(number: str | None) -> bool:
    """True only for a number that may link two referrals to one pseudonym."""
    return number is not None and nhs_number_problem(number) is None
