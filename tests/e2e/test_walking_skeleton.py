"""A referral travels intake → bus → routing → outcomes → each partner's own view."""

from __future__ import annotations

import pytest

from tests.conftest import Alliance, referral_body, wait_until

pytestmark = pytest.mark.infra


def _view_status(client: object, referral_id: str) -> dict[str, object] | None:
    response = client.get(f"/referrals/{referral_id}", params={"person": "false"})  # type: ignore[attr-defined]
    return response.json()["view"] if response.status_code == 200 else None


def test_referral_reaches_referrer_and_link_worker_views_with_sessions(alliance: Alliance) -> None:
    area = f"area-{alliance.suffix}"
    referrer, lw = alliance.client("referrer"), alliance.client("link_worker")
    created = referrer.post("/referrals", json=referral_body(area=area))
    assert created.status_code == 201, created.text
    rid = created.json()["referral_id"]

    routed = wait_until(
        lambda: (v := _view_status(referrer, rid)) and v["status"] == "routed" and v
    )
    assert routed["service_org"] == alliance.ids["link_worker"]

    assert (
        lw.post(
            f"/referrals/{rid}/accept", json={"accepted_at": "2026-01-06T09:00:00Z"}
        ).status_code
        == 200
    )
    session = lw.post(
        f"/referrals/{rid}/sessions",
        json={
            "kind": "longer-appointment",
            "minutes": 50,
            "mode": "in-person",
            "held_at": "2026-01-08T10:00:00Z",
        },
    )
    assert session.status_code == 201, session.text

    lw_view = wait_until(lambda: (v := _view_status(lw, rid)) and v["sessions"] == 1 and v)
    assert lw_view["status"] == "in-progress"
    assert lw_view["session_minutes"] == 50
    ref_view = wait_until(lambda: (v := _view_status(referrer, rid)) and v["sessions"] == 1 and v)
    assert ref_view["status"] == "in-progress"
