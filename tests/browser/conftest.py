"""Browser fixtures: Debian's Chromium driven by Playwright, axe-core on every page.

``chromium``: the browser binary. When it is missing and the tests run as root, it is
installed with apt (as on CI); otherwise the session fails saying how to install it —
these tests are never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from referralnet.system import RunningSystem

CHROMIUM = os.environ.get("REFERRALNET_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("REFERRALNET_SCREENSHOTS")
"""A directory to save each main page's screenshot in (docs/screenshots/ is made so)."""


def _find_chromium() -> str:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("Chromium is missing: run `apt-get install -y chromium` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900
    )
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium() -> str:
    return _find_chromium()


@pytest.fixture
def browser(chromium: str) -> Iterator[Browser]:
    """Per test, not per session: Playwright's sync API holds an event loop in this
    thread while it runs, and the stack's fixtures use ``asyncio.run`` before it."""
    path = chromium
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start
        launched = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Checked:
    """A browser tab whose every page is checked with axe-core (0 violations)."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.axe = Axe()
        self.checked: list[str] = []

    def goto(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        return self.page

    def accessible(self, shot: str | None = None) -> None:
        """axe-core finds no violation on the page shown now (and save its screenshot)."""
        results = self.axe.run(self.page)
        assert results.violations_count == 0, f"{self.page.url}: {results.generate_report()}"
        self.checked.append(self.page.url)
        if shot and SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SCREENSHOTS) / f"{shot}.png"), full_page=True)

    def sign_in(self, token: str) -> None:
        self.goto("/app/sign-in")
        self.page.get_by_label("Your organisation's token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def tabs(browser: Browser, system: RunningSystem) -> Iterator[Callable[[], Checked]]:
    """A factory of tabs, each in its own browser context (its own cookies)."""
    contexts: list[BrowserContext] = []

    def new() -> Checked:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        return Checked(context.new_page(), system.base_url)

    try:
        yield new
    finally:
        for context in contexts:
            context.close()
