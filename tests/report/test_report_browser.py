"""The transparency report in a real browser (Playwright driving Debian's Chromium): every
section renders with its heading, the embedded plots load (offline: the page is opened from a
file), and no script runs. Saves docs/screenshots/report.png."""

from pathlib import Path

import pytest

from rlhfkit.report.build import SECTIONS, build_report
from rlhfkit.report.render import write_report
from tests.report.fake_runs import write_chain

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent (install Debian's chromium: make browser-deps)",
    ),
]


def test_report_sections_and_plots_render_offline(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    runs = write_chain(tmp_path)
    page_path = write_report(build_report([runs["ppo"]]), tmp_path / "report.html")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            requests = []
            context.on("request", lambda r: requests.append(r.url))
            page = context.new_page()
            page.goto(page_path.as_uri())
            for key, title in SECTIONS:
                heading = page.locator(f"section#{key} h2")
                assert heading.is_visible(), key
                assert heading.inner_text() == title
            images = page.locator("img")
            assert images.count() > 0
            for i in range(images.count()):  # every embedded plot decoded to a real picture
                assert page.evaluate("img => img.naturalWidth", images.nth(i).element_handle()) > 0
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
            page.screenshot(path=str(SHOTS / "report.png"), full_page=False)
        finally:
            browser.close()
