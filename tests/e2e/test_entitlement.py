"""Access ends when the role ends, on the real stack (issue 12, findings 1, 2 and 4).

A service that declines keeps the history it received but never the person again; the
service it went to next gets the person; a commissioner gets no individual referral by
any id (not even the pseudonymous one on its own topic); nothing ``POST /referrals``
returns, nor any partner's view, can confirm an NHS number.
"""

from __future__ import annotations

from uuid import UUID

import pytest

from referralnet.system import RunningSystem
from services.distributor.policy import pseudonym
from services.distributor.store import pseudonym_secret
from tests.conftest import Alliance, referral_body, wait_until

pytestmark = pytest.mark.infra


def _row(client: object, rid: str) -> dict[str, object] | None:
    response = client.get(f"/referrals/{rid}", params={"person": "false"})  # type: ignore[attr-defined]
    return dict(response.json()["view"]) if response.status_code == 200 else None


def test_a_declining_service_loses_the_person_and_the_next_one_gets_it(
    system: RunningSystem, alliance: Alliance
) -> None:
    referrer = alliance.client("referrer")
    created = referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}"))
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"referral_id"}  # no person_ref: no identifier oracle
    rid = created.json()["referral_id"]
    row = wait_until(lambda: (v := _row(referrer, rid)) and v["status"] == "routed" and v)
    first = str(row["service_org"])
    by_id = {
        alliance.ids["link_worker"]: "link_worker",
        alliance.ids["second_link_worker"]: "second_link_worker",
    }
    decliner = alliance.client(by_id[first])
    wait_until(lambda: (v := _row(decliner, rid)) and v["status"] == "routed")
    assert decliner.get(f"/referrals/{rid}").json()["person"]["name"] == "Alex Example"

    answer = decliner.post(
        f"/referrals/{rid}/decline",
        json={"reason": "no-capacity", "declined_at": "2026-01-05T11:00:00Z"},
    )
    assert answer.status_code == 200, answer.text
    nxt = answer.json()["next_service"]
    assert nxt is not None and nxt != first

    def declined_view() -> dict[str, object] | None:
        got = decliner.get(f"/referrals/{rid}")
        body = got.json()
        return body if body["view"]["status"] == "declined" else None

    after = wait_until(declined_view)
    assert after["role"] == "former-service"
    assert after["person"] is None
    assert after["view"]["service_org"] is None
    listed = [r for r in decliner.get("/view").json()["referrals"] if r["referral_id"] == rid]
    assert [r["role"] for r in listed] == ["former-service"]

    holder = alliance.client(by_id[nxt])
    wait_until(lambda: (v := _row(holder, rid)) and v["status"] == "routed")
    shown = holder.get(f"/referrals/{rid}").json()
    assert shown["role"] == "link-worker" and shown["person"]["nhs_number"] == "9434765919"


def test_a_commissioner_gets_no_individual_referral_by_any_id(
    system: RunningSystem, alliance: Alliance
) -> None:
    referrer = alliance.client("referrer")
    rid = referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}")).json()[
        "referral_id"
    ]
    icb_id = alliance.ids["commissioner"]
    case = str(UUID(pseudonym(pseudonym_secret(system.settings.home), icb_id, rid)[:32]))
    icb = alliance.client("commissioner")
    # its view holds the pseudonymous row: that is exactly what must not be served
    wait_until(lambda: icb.get("/report").json().get("referrals", 0) >= 1)
    for some_id in (case, rid, "00000000-0000-0000-0000-000000000000"):
        for flag in ("true", "false"):
            response = icb.get(f"/referrals/{some_id}", params={"person": flag})
            assert response.status_code == 403, response.text
            assert "aggregates" in response.json()["reason"]


def test_partners_person_refs_link_nothing(system: RunningSystem, alliance: Alliance) -> None:
    """The same NHS number referred twice by one referrer: its view shows two unrelated
    pseudonyms, so referring a guessed number confirms nothing."""
    referrer = alliance.client("referrer")
    rids = [
        referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}")).json()[
            "referral_id"
        ]
        for _ in range(2)
    ]
    refs = [wait_until(lambda r=r: (v := _row(referrer, r)) and v.get("person_ref")) for r in rids]
    assert refs[0] != refs[1]
