""" "Not yet" is not "not found": a command that arrives before the service has heard of
the referral is 409 + Retry-After while intake knows the referral; 404 only for ids
that exist nowhere.

Routing is paused (SIGSTOP) so the window in which the referral exists but is not yet
routed is as long as the test needs, instead of the ~milliseconds it usually is.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from referralnet.system import RunningSystem
from tests.conftest import Alliance, referral_body, wait_until

pytestmark = pytest.mark.infra

ACCEPT = {"accepted_at": "2026-01-06T09:00:00Z"}
CONTACT = {"contacted_at": "2026-01-06T10:00:00Z", "mode": "phone"}


@contextmanager
def paused(system: RunningSystem, *names: str) -> Iterator[None]:
    procs = [system.supervisor.children[name].proc for name in names]
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)


def routing_paused(system: RunningSystem) -> Any:
    return paused(system, "routing")


def not_yet(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert response.headers.get("Retry-After") == "1"
    assert response.json()["error"] == "not-yet-known"


def test_commands_before_routing_are_409_not_yet_and_unknown_ids_404(
    system: RunningSystem, alliance: Alliance
) -> None:
    referrer, lw = alliance.client("referrer"), alliance.client("link_worker")
    with routing_paused(system):
        created = referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}"))
        assert created.status_code == 201, created.text
        rid = created.json()["referral_id"]
        not_yet(lw.post(f"/referrals/{rid}/accept", json=ACCEPT))
        not_yet(
            lw.post(
                f"/referrals/{rid}/decline",
                json={"reason": "no-capacity", "declined_at": "2026-01-06T09:00:00Z"},
            )
        )
        not_yet(lw.post(f"/referrals/{rid}/contacts", json=CONTACT))  # outcomes: not yet
        unknown = uuid.uuid4()
        for path, body in (("accept", ACCEPT), ("contacts", CONTACT)):
            missing = lw.post(f"/referrals/{unknown}/{path}", json=body)
            assert missing.status_code == 404, missing.text
            assert "Retry-After" not in missing.headers
    # Once routing catches up, the same command succeeds.
    wait_until(lambda: lw.post(f"/referrals/{rid}/accept", json=ACCEPT).status_code == 200)
    wait_until(lambda: lw.post(f"/referrals/{rid}/contacts", json=CONTACT).status_code == 201)


def test_reading_a_referral_before_it_reaches_your_view_is_409_for_you_404_for_others(
    system: RunningSystem, alliance: Alliance
) -> None:
    referrer = alliance.client("referrer")
    with paused(system, "routing", "distributor"):  # nothing reaches any view
        created = referrer.post("/referrals", json=referral_body(area=f"area-{alliance.suffix}"))
        assert created.status_code == 201, created.text
        rid = created.json()["referral_id"]
        not_yet(referrer.get(f"/referrals/{rid}"))
        for role in ("other_referrer", "link_worker", "provider"):
            assert alliance.client(role).get(f"/referrals/{rid}").status_code == 404, role
    wait_until(lambda: referrer.get(f"/referrals/{rid}").status_code == 200)
