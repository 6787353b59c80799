"""The dashboard in a real browser: Debian's chromium driven by Playwright (Python).

Skipped, with the reason, where chromium or the playwright package is missing. A failing
test leaves a screenshot in the test's output directory (printed in the failure).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Fleet
from tests.e2e.test_dashboard import with_ui

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]


@pytest.fixture(scope="module")  # a live sync Playwright would break later asyncio tests
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    with sync_api.sync_playwright() as playwright:
        the_browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield the_browser
        finally:
            the_browser.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    the_page = browser.new_page()
    failed_before = request.session.testsfailed
    try:
        yield the_page
    finally:
        # the call's report is counted before fixtures are torn down
        if request.session.testsfailed > failed_before:
            shot = tmp_path / "dashboard.png"
            the_page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        the_page.close()


def test_the_overview_shows_the_running_fleet(fleet: Fleet, page: Any) -> None:
    base = with_ui(fleet)
    fleet.ok("apply")
    page.goto(base + "/ui")
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    row = page.locator("tr[data-service='web']")
    assert "web" in row.inner_text() and "r1" in row.inner_text()
    # every instance shows up, ready, with its address
    page.wait_for_function("document.querySelectorAll('tr.instance').length === 3", timeout=15_000)
    instances = page.locator("tr.instance").all_inner_texts()
    assert all("ready" in text and "127.0.0.1:" in text for text in instances), instances
    # the events timeline and the release history came from the API too
    page.wait_for_selector("tr[data-kind='apply.started']", timeout=15_000)
    assert "r1 (current)" in page.locator("#releases").inner_text()
