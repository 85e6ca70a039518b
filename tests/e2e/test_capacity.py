"""No overbooking: concurrent referrals never take more places than a service has,
a decline frees its place, and a close frees it too (the capacity ledger stays exact)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from referralnet.system import RunningSystem
from tests.conftest import Alliance, alliance_yaml, referral_body, register_alliance, wait_until

pytestmark = pytest.mark.infra

CAPACITY = 3


def fire(alliance: Alliance, count: int) -> list[str]:
    """``count`` referrals needing only ``stress`` (only ``lw`` covers it), all at once."""
    body = referral_body(needs=["stress"], area=f"area-{alliance.suffix}")

    def one(_: int) -> str:
        with alliance.client("referrer") as client:
            response = client.post("/referrals", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["referral_id"])

    with ThreadPoolExecutor(max_workers=count) as pool:
        rids = list(pool.map(one, range(count)))
    assert len(set(rids)) == count
    return rids


def statuses(client: httpx.Client, rids: list[str]) -> dict[str, dict[str, Any]] | None:
    """The referrer's view of ``rids`` once every one is routed or escalated, else None."""
    rows = client.get("/view", params={"limit": 1000}).json()["referrals"]
    mine = {r["referral_id"]: r for r in rows if r["referral_id"] in rids}
    settled = len(mine) == len(rids) and all(
        r["status"] in ("routed", "escalated") for r in mine.values()
    )
    return mine if settled else None


def ledger(system: RunningSystem, service_org: str) -> tuple[int, int, int]:
    """(caseload, limit, cases holding a place there) from routing's own tables."""
    with psycopg.connect(system.database_url) as conn:
        row = conn.execute(
            "SELECT caseload, caseload_limit FROM routing.capacity WHERE service_org = %s",
            (service_org,),
        ).fetchone()
        held = conn.execute(
            "SELECT count(*) FROM routing.cases WHERE service_org = %s AND holds_place",
            (service_org,),
        ).fetchone()
    assert row is not None and held is not None
    return int(row[0]), int(row[1]), int(held[0])


def test_concurrent_referrals_never_overbook(system: RunningSystem) -> None:
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix, capacity=CAPACITY), suffix)
    lw_id, lw2_id = alliance.ids["link_worker"], alliance.ids["second_link_worker"]
    referrer, lw = alliance.client("referrer"), alliance.client("link_worker")

    # 15 at once for 3 places
    first = fire(alliance, 15)
    settled = wait_until(lambda: statuses(referrer, first), timeout=60)
    routed = [rid for rid, r in settled.items() if r["status"] == "routed"]
    escalated = [rid for rid, r in settled.items() if r["status"] == "escalated"]
    assert len(routed) == CAPACITY and len(escalated) == 15 - CAPACITY
    assert {settled[rid]["service_org"] for rid in routed} == {lw_id}
    assert ledger(system, lw_id) == (CAPACITY, CAPACITY, CAPACITY)
    assert ledger(system, lw2_id)[0] == 0  # lw2 does not cover stress: never used

    # a decline frees the place; with lw tried and lw2 not covering stress: escalated
    declined_rid = routed[0]
    answer = lw.post(
        f"/referrals/{declined_rid}/decline",
        json={"reason": "no-capacity", "declined_at": "2026-01-06T09:00:00Z"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "escalated" and answer.json()["next_service"] is None
    assert ledger(system, lw_id) == (CAPACITY - 1, CAPACITY, CAPACITY - 1)
    wait_until(
        lambda: (
            (v := statuses(referrer, [declined_rid]))
            and v[declined_rid]["status"] == "escalated"
            and v[declined_rid]["declines"] == 1
        )
    )

    # the freed place is taken exactly once by the next burst
    second = fire(alliance, 5)
    settled = wait_until(lambda: statuses(referrer, second), timeout=60)
    assert sorted(r["status"] for r in settled.values()) == ["escalated"] * 4 + ["routed"]
    assert ledger(system, lw_id) == (CAPACITY, CAPACITY, CAPACITY)

    # closing a case gives its place back
    closing = routed[1]
    accepted = lw.post(f"/referrals/{closing}/accept", json={"accepted_at": "2026-01-06T09:00:00Z"})
    assert accepted.status_code == 200, accepted.text
    assert ledger(system, lw_id)[0] == CAPACITY  # accepting keeps the place
    closed = lw.post(
        f"/referrals/{closing}/close",
        json={"reason": "declined-by-person", "closed_at": "2026-01-07T09:00:00Z"},
    )
    assert closed.status_code == 201, closed.text
    wait_until(lambda: ledger(system, lw_id) == (CAPACITY - 1, CAPACITY, CAPACITY - 1))


def test_a_decline_re_routes_to_the_next_eligible_service(system: RunningSystem) -> None:
    suffix = uuid.uuid4().hex[:8]
    alliance = register_alliance(system, alliance_yaml(suffix, capacity=1), suffix)
    lw_id, lw2_id = alliance.ids["link_worker"], alliance.ids["second_link_worker"]
    referrer = alliance.client("referrer")
    # social-connection: both services are eligible, each with one place; lw is chosen
    # first (name order at equal coverage and room), lw2 after lw declines
    body = referral_body(needs=["social-connection"], area=f"area-{suffix}")
    rid = referrer.post("/referrals", json=body).json()["referral_id"]
    routed = wait_until(lambda: (v := statuses(referrer, [rid])) and v[rid])
    assert (routed["status"], routed["service_org"]) == ("routed", lw_id)
    answer = alliance.client("link_worker").post(
        f"/referrals/{rid}/decline",
        json={"reason": "not-eligible", "declined_at": "2026-01-06T09:00:00Z"},
    )
    assert answer.json() == {"referral_id": rid, "status": "re-routed", "next_service": lw2_id}
    assert ledger(system, lw_id) == (0, 1, 0)
    assert ledger(system, lw2_id) == (1, 1, 1)
    wait_until(lambda: (v := statuses(referrer, [rid])) and v[rid]["service_org"] == lw2_id)
    # lw2 is now full and lw was tried: another decline escalates, freeing lw2's place
    answer = alliance.client("second_link_worker").post(
        f"/referrals/{rid}/decline",
        json={"reason": "no-capacity", "declined_at": "2026-01-06T10:00:00Z"},
    )
    assert answer.json()["status"] == "escalated"
    assert ledger(system, lw2_id) == (0, 1, 0)
    assert ledger(system, lw_id) == (0, 1, 0)
