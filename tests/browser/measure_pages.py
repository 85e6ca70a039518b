"""Page load times of the web app in a real browser (issue 15's closing figures).

Usage, against a running ``referralnet up`` (e.g. on ``make demo``'s data)::

    .venv/bin/python -m tests.browser.measure_pages http://127.0.0.1:8000 \\
        gp=TOKEN lw=TOKEN vg=TOKEN icb=TOKEN [--rounds 5]

Each page is loaded ``rounds`` times after one warm-up; the time is the browser's
Navigation Timing from navigation start to the load event (server time, transfer and
rendering). Prints per page median and worst, then the median page and the worst page.
"""

from __future__ import annotations

import argparse
import re
import statistics

from playwright.sync_api import Page, sync_playwright

from tests.browser.conftest import _find_chromium

PAGES = {
    "gp": ["/app/referrals", "/app/refer", "{referral}", "{referral}/journey"],
    "lw": ["/app/incoming", "/app/caseload", "{referral}"],
    "vg": ["/app/connected"],
    "icb": ["/app/report", "/app/report?from=2025-04-01&to=2025-07-01"],
}


def _load_ms(page: Page, url: str) -> float:
    page.goto(url)
    return float(
        page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return n.loadEventEnd - n.startTime; }"
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("tokens", nargs="+", help="role=token for gp, lw, vg, icb")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shots", help="save each page's screenshot (PNG) in this directory")
    args = parser.parse_args()
    tokens = dict(t.split("=", 1) for t in args.tokens)
    times: dict[str, list[float]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_find_chromium(), args=["--no-sandbox"])
        for role, paths in PAGES.items():
            context = browser.new_context()
            page = context.new_page()
            page.goto(args.base + "/app/sign-in")
            page.get_by_label("Your organisation's token").fill(tokens[role])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_load_state()
            referral = ""
            for path in paths:
                link = page.locator("a[href^='/app/referrals/']").first
                if not referral and link.count():
                    referral = str(link.get_attribute("href"))
                if "{referral}" in path and not referral:
                    continue
                url = args.base + path.format(referral=referral)
                _load_ms(page, url)  # warm-up
                key = f"{role} {path.format(referral='/app/referrals/<id>')}"
                times[key] = [_load_ms(page, url) for _ in range(args.rounds)]
                if args.shots:
                    name = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")
                    page.screenshot(path=f"{args.shots}/demo-{name}.png", full_page=True)
            context.close()
        browser.close()
    for key, values in times.items():
        print(f"{key:<48} median {statistics.median(values):7.0f} ms  worst {max(values):7.0f} ms")
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"median page: {statistics.median(medians.values()):.0f} ms; worst page: "
        f"{max(medians, key=lambda k: medians[k])} at {max(medians.values()):.0f} ms median, "
        f"{max(max(v) for v in times.values()):.0f} ms worst single load"
    )


if __name__ == "__main__":
    main()
