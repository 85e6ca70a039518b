"""Issue 15: every role's pages in a real browser, on the real stack, axe-checked.

One journey: a GP refers (after a refused form), the link worker accepts, contacts,
holds a session, connects the person to a walking group and records a baseline; the
provider records attendance; the link worker records a follow-up and closes; the GP
sees the outcome summary and a verified journey; the commissioner's figures change.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Checked
from tests.conftest import Alliance

pytestmark = pytest.mark.infra
SLOW = 20_000  # ms: views are fed through the bus


def _reload_until(tab: Checked, path: str, text: str) -> None:
    """Reload ``path`` until ``text`` shows (the view is fed by the bus), with a deadline."""
    import time

    deadline = time.monotonic() + SLOW / 1000
    while True:
        tab.goto(path)
        if tab.page.get_by_text(text).count() or time.monotonic() > deadline:
            break
        tab.page.wait_for_timeout(200)  # polling the view with a deadline
    expect(tab.page.get_by_text(text).first).to_be_visible()


def _figure(tab: Checked, name: str) -> int:
    return int(tab.page.locator(f"#fig-{name}").inner_text())


def test_every_role_in_the_browser(alliance: Alliance, tabs: Callable[[], Checked]) -> None:
    token = {role: alliance.tokens[org] for role, org in alliance.ids.items()}
    area = f"area-{alliance.suffix}"

    # the commissioner's figures before anything happened
    icb = tabs()
    icb.sign_in(token["commissioner"])
    expect(icb.page).to_have_url(re.compile(r"/app/report$"))
    before = _figure(icb, "sessions")

    # GP: a refused form keeps what was typed and says why beside each field
    gp = tabs()
    gp.sign_in(token["referrer"])
    expect(gp.page).to_have_url(re.compile(r"/app/referrals$"))
    gp.accessible("my-referrals")
    gp.goto("/app/refer")
    gp.accessible("refer")
    page = gp.page
    page.get_by_label("Full name").fill("Jo Walker")
    page.get_by_label("Date of birth").fill("2999-01-01")
    page.get_by_role("button", name="Send referral").click()
    expect(page.get_by_role("heading", name="There is a problem")).to_be_visible()
    expect(page.locator("#f-person-date_of_birth-error")).to_contain_text("future")
    expect(page.locator("#f-needs-error")).to_be_visible()
    expect(page.get_by_label("Full name")).to_have_value("Jo Walker")
    gp.accessible("refer-errors")
    page.get_by_label("Date of birth").fill("1980-03-04")
    page.get_by_label("physical activity").check()
    page.get_by_label("stress").check()
    page.get_by_label("The person agreed to be referred to a link worker").check()
    page.get_by_label("The person agreed that we see their outcomes").check()
    page.get_by_label("Area").select_option(area)
    page.get_by_role("button", name="Send referral").click()
    expect(page.get_by_role("heading", name=re.compile("^Referral "))).to_be_visible()
    expect(page.get_by_text("Done: referred")).to_be_visible()  # read your own write
    referral_path = re.sub(r"^https?://[^/]+|\?.*$", "", page.url)
    gp.accessible("referral-referrer")

    # link worker: incoming -> accept
    lw = tabs()
    lw.sign_in(token["link_worker"])
    _reload_until(lw, "/app/incoming", "waiting for your answer")
    lw.accessible("incoming")
    lw.goto(referral_path)
    expect(lw.page.get_by_text("Jo Walker")).to_be_visible()  # routed service: person shown
    stale = tabs()  # a second link-worker tab still showing the Accept button
    stale.sign_in(token["link_worker"])
    stale.goto(referral_path)
    lw.page.get_by_role("button", name="Accept").click()
    expect(lw.page.get_by_text("Done: accepted")).to_be_visible()
    stale.page.get_by_role("button", name="Accept").click()  # 409: shown as what happened
    expect(
        stale.page.get_by_role("heading", name="This referral changed meanwhile")
    ).to_be_visible()
    stale.accessible()

    # contact, a refused then a recorded session, the walking group, a baseline
    p = lw.page
    p.get_by_role("button", name="Record first contact").click()
    expect(p.get_by_text("Done: contact")).to_be_visible()
    p.get_by_label("Minutes (1 to 600)").fill("900")
    p.get_by_role("button", name="Record session").click()
    expect(p.locator("#f-minutes-error")).to_be_visible()
    expect(p.get_by_label("Minutes (1 to 600)")).to_have_value("900")
    p.get_by_label("Minutes (1 to 600)").fill("45")
    p.get_by_role("button", name="Record session").click()
    expect(p.get_by_text("Done: session")).to_be_visible()
    expect(p.get_by_role("table", name="Sessions")).to_contain_text("45")
    p.get_by_label("Activity").select_option(f"walk-{alliance.suffix}")
    p.get_by_role("button", name="Connect").click()
    expect(p.get_by_text("Done: activity")).to_be_visible()
    for i, value in enumerate(("3", "3", "3")):
        p.locator(f"#f-ucla3-{i}").fill(value)
    p.get_by_role("button", name="Record measures").click()
    expect(p.get_by_text("Done: assessment")).to_be_visible()
    lw.accessible("referral-link-worker")
    lw.goto("/app/caseload")
    expect(lw.page.locator(".card a")).to_have_count(1)
    lw.accessible("caseload")

    # provider: people connected -> attendance
    vg = tabs()
    vg.sign_in(token["provider"])
    _reload_until(vg, "/app/connected", "Record attendance")
    vg.accessible("connected")
    vg.page.get_by_role("link", name=re.compile("Record attendance")).click()
    vg.page.get_by_role("button", name="Record attendance").click()
    expect(vg.page.get_by_text("Done: attendance")).to_be_visible()
    vg.accessible("referral-provider")

    # link worker: follow-up and close
    lw.goto(referral_path)
    p.get_by_label("Timepoint").select_option("follow-up")
    for i, value in enumerate(("1", "1", "1")):
        p.locator(f"#f-ucla3-{i}").fill(value)
    p.get_by_role("button", name="Record measures").click()
    expect(p.get_by_text("Done: assessment")).to_be_visible()
    p.get_by_label("Reason").select_option("completed")
    p.get_by_role("button", name="Close referral").click()
    expect(p.get_by_text("Done: close")).to_be_visible()

    # GP: the outcome summary and the verified journey
    _reload_until(gp, referral_path, "-6.00")
    expect(gp.page.get_by_role("table", name=re.compile("Scores per measure"))).to_contain_text(
        "ucla3"
    )
    gp.accessible("referral-outcome")
    gp.goto(referral_path + "/journey")
    expect(gp.page.get_by_text("Integrity check passed")).to_be_visible()
    gp.accessible("journey")

    # commissioner: the figures changed
    _reload_until(icb, "/app/report", "Sessions by kind per month")
    import time

    deadline = time.monotonic() + SLOW / 1000
    while _figure(icb, "sessions") <= before and time.monotonic() < deadline:
        icb.page.reload()
    assert _figure(icb, "sessions") == before + 1
    expect(icb.page.locator("#outcome-changes")).to_contain_text("ucla3")
    icb.accessible("report")
    csv = icb.page.request.get(icb.base_url + "/app/report.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert f"sessions,{before + 1}" in csv.text().replace("totals,", "")
    assert "sessions_by_kind_per_month" in csv.text()
    icb.goto("/app/report?from=2025-02-01&to=2025-01-01")  # the API's 422, beside the field
    expect(icb.page.locator("#f-to-error")).to_contain_text("must be after from")
    expect(icb.page.get_by_label("From (inclusive)")).to_have_value("2025-02-01")
    icb.accessible("report-errors")
