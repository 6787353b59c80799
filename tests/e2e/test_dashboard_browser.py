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

from tests.e2e.conftest import Fleet, Load
from tests.e2e.test_dashboard import ROLLING, token, with_ui

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
    # the log tail of the service: each instance said where it listens
    page.wait_for_function(
        "document.getElementById('logs').textContent.split('listening on port').length === 4",
        timeout=15_000,
    )


CANARY = """      type: canary
      steps:
        - set_weight: 34
        - analysis: {window: 2s, min_requests: 5, max_error_rate: 0.2}
        - set_weight: 67
        - analysis: {window: 2s, min_requests: 5, max_error_rate: 0.2}
      bake_window: 120s
      analysis: {min_requests: 5, max_error_rate: 0.2}"""


def test_a_canary_updates_live_and_the_operator_aborts_it(fleet: Fleet, page: Any) -> None:
    """Weights, graphs, verdicts and the bake countdown change without a reload; Abort (with
    the token, after the confirmation) rolls back, and the event names the token."""
    base = with_ui(fleet)
    fleet.edit_spec(ROLLING, CANARY)
    fleet.ok("apply")
    secret = token(fleet, "oncall")
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmation before each action
    page.goto(base + "/ui")
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    page.fill("#token", secret)
    page.dispatch_event("#token", "change")
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads

    fleet.set_version("v2")
    with Load(fleet.url, clients=4, max_seconds=110) as load:
        apply = fleet.popen("apply")
        try:
            block = "[data-rollout='web']"
            page.wait_for_selector(block, timeout=30_000)
            page.wait_for_selector(f"{block} [data-weight='r2=34']", timeout=30_000)
            points = page.get_attribute(f"{block} svg[data-graph='rate'] polyline", "points")
            # the next weight step, in the same page
            page.wait_for_selector(f"{block} [data-weight='r2=67']", timeout=30_000)
            page.wait_for_function(
                "(before) => { const l = document.querySelector(\"[data-rollout='web'] "
                "svg[data-graph='rate'] polyline\"); return l && l.getAttribute('points') "
                "!== before; }",
                arg=points,
                timeout=15_000,
            )
            # the first analysis passed, with its figures and thresholds
            verdict = page.locator(f"{block} tr[data-verdict='pass']").first
            verdict.wait_for(timeout=30_000)
            assert "req" in verdict.inner_text() and "error rate ≤ 0.2" in verdict.inner_text()
            # full promotion, then the bake window counts down
            left = page.locator(f"{block} [data-bake-left]")
            left.wait_for(timeout=30_000)
            first = float(left.get_attribute("data-bake-left") or 0)
            page.wait_for_function(
                "(first) => { const e = document.querySelector('[data-bake-left]'); "
                "return e && +e.dataset.bakeLeft < first; }",
                arg=first,
                timeout=15_000,
            )

            # without the token the action is refused, and the roll-out goes on
            page.fill("#token", "")
            page.dispatch_event("#token", "change")
            page.click(f"{block} button:has-text('abort')")
            page.wait_for_selector("#msg .bad", timeout=15_000)
            assert "refused (401)" in page.inner_text("#msg"), page.inner_text("#msg")
            assert apply.poll() is None
            page.fill("#token", secret)
            page.dispatch_event("#token", "change")

            page.click(f"{block} button:has-text('abort')")
            page.wait_for_selector("#msg .ok", timeout=15_000)
            assert "abort the roll-out of web: done" in page.inner_text("#msg")
            output = "".join(apply.communicate(timeout=90))
            assert apply.returncode == 1, output  # rolled back
        finally:
            if apply.poll() is None:
                apply.kill()
            apply.communicate()
    page.wait_for_function(
        "[...document.querySelectorAll('tr.instance')].length === 3 && [...document."
        "querySelectorAll('tr.instance')].every(r => r.innerText.includes('r1'))",
        timeout=30_000,
    )
    abort = page.locator("tr[data-kind='rollout.abort']")
    abort.wait_for(timeout=15_000)
    assert "token:oncall" in abort.inner_text()
    assert page.evaluate("window.__sameDocument") is True
    # history says how each release ended: r2 rolled back (aborted by the operator)
    page.wait_for_selector("#releases td[data-ended^='rolled back']", timeout=15_000)
    assert "aborted by token:oncall" in page.inner_text("#releases")
    # history: r1 → r2 changed the image (the app's VERSION file is in it)
    page.wait_for_selector("#diff-a option[value='r2']", state="attached", timeout=15_000)
    page.select_option("#diff-a", "r1")
    page.select_option("#diff-b", "r2")
    page.click("#diff-go")
    image = page.locator("#diff-table tr[data-key='image']")
    image.wait_for(timeout=15_000)
    assert "changed" in image.inner_text()
    assert load.ok > 0
