"""Pages in a real browser: Debian's Chromium, headless, driven by Playwright."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
NEEDS_CHROMIUM = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]  # fmt: skip
# Screenshots of each page at a desktop and a phone size, to look at (kept after the run).
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / ".run" / "screenshots"))


# Every violation of the Content-Security-Policy is logged to the console, where the fixture
# below collects it (Chromium logs the ones it blocks as well, with "Content Security Policy").
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => console.error(
  `CSP violation: ${e.violatedDirective} refused ${e.blockedURI || "inline code"}`
  + ` in ${e.sourceFile || location.href}`));
"""


def csp_violations(page: object) -> list[str]:
    """What the page's Content-Security-Policy refused since the browser opened (all pages)."""
    return page.csp_violations


@pytest.fixture
def browser_page() -> Iterator[object]:
    """A browser tab; the test fails if any page it showed reported a CSP violation."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.csp_violations = []
        page.add_init_script(CSP_LISTENER)
        page.on("console", lambda message: page.csp_violations.append(message.text)
                if "CSP violation" in message.text or "Content Security Policy" in message.text else None)  # fmt: skip
        try:
            yield page
            assert not page.csp_violations, "\n".join(page.csp_violations)
        finally:
            browser.close()


@pytest.fixture
def screenshots() -> Callable[[object, str], None]:
    """``shoot(page, name)``: full-page screenshots at 1280x800 and 390x844."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shoot(page: object, name: str) -> None:
        size = page.viewport_size
        for width, height in ((1280, 800), (390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}x{height}.png"), full_page=True)
        page.set_viewport_size(size)

    return shoot


def log_in(page: object, base_url: str, username: str, password: str, next_path: str) -> None:
    page.goto(f"{base_url}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{base_url}{next_path}")


def wait_for(page: object, expression: str, arg: object = None, timeout: float = 30_000) -> None:
    """Like ``page.wait_for_function``, which the pages' CSP refuses (Playwright compiles the
    predicate in the page, and script-src has no 'unsafe-eval'): the expression is polled with
    ``page.evaluate``, which goes through the DevTools protocol, outside the policy."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout / 1000:g} s: {expression}")
        time.sleep(0.1)
