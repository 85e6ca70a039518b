"""Issue 15: sign-in, expiry, CSRF and "a page never shows another organisation's
data", through a real browser and by guessing URLs."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from referralnet.system import RunningSystem
from tests.browser.conftest import Checked
from tests.conftest import Alliance, referral_body, wait_until
from web.app.session import COOKIE, Sessions

pytestmark = pytest.mark.infra


def _refer_by_api(alliance: Alliance) -> str:
    body = referral_body(area=f"area-{alliance.suffix}", needs=["physical-activity"])
    body["person"]["name"] = "Sam Private"
    with alliance.client("referrer") as gp:
        created = gp.post("/referrals", json=body)
        assert created.status_code == 201, created.text
        referral_id = str(created.json()["referral_id"])
        wait_until(lambda: gp.get(f"/referrals/{referral_id}").status_code == 200)
    return referral_id


def test_no_page_shows_another_organisations_data(
    alliance: Alliance, tabs: Callable[[], Checked]
) -> None:
    referral_id = _refer_by_api(alliance)
    path = f"/app/referrals/{referral_id}"
    token = {role: alliance.tokens[org] for role, org in alliance.ids.items()}

    gp = tabs()
    gp.sign_in(token["referrer"])
    gp.goto(path)
    expect(gp.page.get_by_text("Sam Private")).to_be_visible()  # its own referral: shown

    for role, heading in (
        ("other_referrer", "Referral not found"),
        ("provider", "Referral not found"),
        ("commissioner", "Referral not found"),
    ):
        other = tabs()
        other.sign_in(token[role])
        for guessed in (path, path + "/journey"):
            other.goto(guessed)
            expect(other.page.get_by_role("heading", level=1)).to_contain_text(
                heading if not guessed.endswith("journey") else "Journey not available"
            )
            assert "Sam Private" not in other.page.content()
            assert "physical-activity" not in other.page.content()  # nor its needs
        other.accessible()
        if role == "other_referrer":
            other.goto("/app/referrals")
            assert referral_id[:8] not in other.page.content()  # not in its list either
    gp.goto("/app/referrals/00000000-0000-4000-8000-000000000000")
    expect(gp.page.get_by_role("heading", level=1)).to_contain_text("Referral not found")
    for nowhere in ("/app/referrals/not-an-id", "/app/no-such-page"):
        gp.goto(nowhere)
        expect(gp.page.get_by_role("heading", level=1)).to_contain_text("Page not found")
    gp.accessible()


def test_sign_in_cookie_expiry_csrf_and_sign_out(
    system: RunningSystem, alliance: Alliance, tabs: Callable[[], Checked]
) -> None:
    token = {role: alliance.tokens[org] for role, org in alliance.ids.items()}
    lw = tabs()

    # keyboard only: the skip link comes first, then the form; Enter signs in
    gp_keys = tabs()
    gp_keys.goto("/app/sign-in")
    gp_keys.page.keyboard.press("Tab")
    expect(gp_keys.page.get_by_role("link", name="Skip to main content")).to_be_focused()
    gp_keys.page.keyboard.press("Tab")
    gp_keys.page.keyboard.press("Tab")
    expect(gp_keys.page.get_by_label("Your organisation's token")).to_be_focused()
    gp_keys.page.keyboard.type(token["referrer"])
    gp_keys.page.keyboard.press("Enter")
    expect(gp_keys.page).to_have_url(re.compile(r"/app/referrals$"))

    # a wrong token: said plainly, nothing kept
    lw.sign_in("rn_not-a-real-token")
    expect(lw.page.get_by_role("alert")).to_contain_text("not known")
    lw.accessible("sign-in-error")

    # no session: sign in, then back to the page asked for
    lw.goto("/app/caseload")
    expect(lw.page).to_have_url(re.compile(r"/app/sign-in\?next="))
    lw.accessible("sign-in")
    lw.page.get_by_label("Your organisation's token").fill(token["link_worker"])
    lw.page.get_by_role("button", name="Sign in").click()
    expect(lw.page).to_have_url(re.compile(r"/app/caseload$"))
    cookie = next(c for c in lw.page.context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/app"
    assert token["link_worker"] not in cookie["value"]

    # an expired session (sealed with the server's own key, 9 hours ago)
    sessions = Sessions.from_home(system.settings.home)
    old = sessions.new(
        token["link_worker"], alliance.ids["link_worker"], "LW", "link-worker-service"
    )
    expired = sessions.seal(old, at=int(time.time()) - 9 * 3600)
    lw.page.context.add_cookies(
        [{"name": COOKIE, "value": expired, "domain": cookie["domain"], "path": "/app"}]
    )
    lw.goto("/app/incoming")
    expect(lw.page).to_have_url(re.compile(r"/app/sign-in\?next=%2Fapp%2Fincoming"))
    lw.page.get_by_label("Your organisation's token").fill(token["link_worker"])
    lw.page.get_by_role("button", name="Sign in").click()
    expect(lw.page).to_have_url(re.compile(r"/app/incoming$"))

    # a form without this session's CSRF value: refused, nothing stored
    gp = tabs()
    gp.sign_in(token["referrer"])
    form: dict[str, str | float | bool] = {
        "person.name": "Forged Person",
        "person.date_of_birth": "1980-01-01",
        "needs": "stress",
        "consent.share_with_link_worker": "yes",
        "area": f"area-{alliance.suffix}",
        "referred_at": "2026-01-05T10:00",
    }
    refused = gp.page.request.post(gp.base_url + "/app/refer", form=form)
    assert refused.status == 403
    with_csrf = gp.page.request.post(gp.base_url + "/app/refer", form={**form, "csrf": "guess"})
    assert with_csrf.status == 403
    with alliance.client("referrer") as api:
        assert api.get("/view").json()["totals"]["referrals"] == 0

    # sign out: the cookie is gone and pages ask to sign in again
    gp.goto("/app/referrals")
    gp.page.get_by_role("button", name="Sign out").click()
    expect(gp.page.get_by_role("heading", name="Signed out")).to_be_visible()
    assert not [c for c in gp.page.context.cookies() if c["name"] == COOKIE]
    gp.goto("/app/referrals")
    expect(gp.page).to_have_url(re.compile(r"/app/sign-in"))
