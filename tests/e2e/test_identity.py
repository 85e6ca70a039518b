"""Placeholder and test-range NHS numbers identify nobody: refused at the door, so they
can never join two people under one pseudonym (the five-people example of issue 13)."""

from __future__ import annotations

import pytest

from tests.conftest import Alliance, referral_body

pytestmark = pytest.mark.infra


def test_five_people_with_placeholder_numbers_are_each_refused(alliance: Alliance) -> None:
    referrer = alliance.client("referrer")
    for name, number in [
        ("Ann", "9999999999"), ("Bob", "9999999999"), ("Cat", "0000000000"),
        ("Dev", "0000000000"), ("Eve", "1111111111"), ("Fay", "999 000 0018"),
    ]:  # fmt: skip
        body = referral_body(area=f"area-{alliance.suffix}")
        body["person"] = {**body["person"], "name": name, "nhs_number": number}
        answer = referrer.post("/referrals", json=body)
        assert answer.status_code == 422, answer.text
        assert [f["field"] for f in answer.json()["fields"]] == ["person.nhs_number"]
    # Without the number the referral goes through (the field is optional).
    body = referral_body(area=f"area-{alliance.suffix}")
    body["person"] = {k: v for k, v in body["person"].items() if k != "nhs_number"}
    assert referrer.post("/referrals", json=body).status_code == 201
