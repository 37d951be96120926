"""An admin sets up a project, a rater judges three pairs with clicks and keys, the admin sees
the judgments and exports them: Playwright driving Debian's Chromium against a real server
process. Saves screenshots of the rater and admin pages to docs/screenshots/."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
XSS = "<script>window.__owned = 1; alert('owned')</script>"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent (install Debian's chromium: make browser-deps)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    from rlhfkit.store.migrate import open_store
    from rlhfkit.store.users import create_user

    url = f"sqlite:///{tmp_path}/browser.db"
    create_user(open_store(url), "admin", "admin-password", "admin")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", "serve", "--port", str(port)],
        env={**os.environ, "RLHFKIT_DATABASE_URL": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120  # a loaded 2-core machine
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.TransportError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()  # first: reading a live server's pipe would wait for ever
                pytest.fail(f"server did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def _login(page, base, username, password):
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_admin_and_rater_in_a_real_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    items = tmp_path / "pairs.jsonl"
    rows = [
        {
            "prompt": "How do I boil an egg?",
            "response_a": "Simmer it for 9 minutes, then cool it in cold water.",
            "response_b": "Eggs are laid by hens.",
        },
        {
            "prompt": f"Repeat this: {XSS}",
            "response_a": XSS,
            "response_b": "I would rather not run scripts.",
        },
        {
            "prompt": "Say something kind.",
            "response_a": "You are doing great.",
            "response_b": "No.",
        },
    ]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    SHOTS.mkdir(parents=True, exist_ok=True)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            admin = browser.new_context(
                viewport={"width": 1280, "height": 900}, accept_downloads=True
            ).new_page()
            _login(admin, server, "admin", "admin-password")
            admin.click("#new-project")
            admin.fill("input[name=name]", "Egg round")
            admin.fill("input[name=overlap_k]", "1")
            admin.fill("input[name=gold_share]", "0")
            admin.click("#project-form button[type=submit]")
            admin.set_input_files("#import-form input[type=file]", str(items))
            admin.click("#import-form button[type=submit]")
            admin.fill("#invite-form input[name=username]", "rita")
            admin.fill("#invite-form input[name=password]", "rita-password")
            admin.click("#invite-form button[type=submit]")
            assert "<b>3</b> items" in admin.content()
            project_url = admin.url

            rater = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            dialogs = []
            rater.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            _login(rater, server, "rita", "rita-password")
            rater.click("text=Start rating")
            seen = set()
            for step in range(3):
                rater.wait_for_selector("#task-form")
                prompt = rater.inner_text(".conversation")
                seen.add(prompt)
                if "Repeat this" in prompt:
                    # The script is shown as text and never runs.
                    assert XSS in rater.inner_text("#response-left") + rater.inner_text(
                        "#response-right"
                    )
                    assert rater.evaluate("window.__owned") is None
                    rater.screenshot(path=str(SHOTS / "rater-comparison.png"), full_page=True)
                # each choice submits the form: wait for the next page, not the old one
                with rater.expect_navigation():
                    if step == 0:
                        rater.check("#response-left input[value=helpful]")
                        rater.click("#choose-left")
                    elif step == 1:
                        rater.keyboard.press("s")  # strength: cycles to "much"
                        rater.keyboard.press("2")
                    else:
                        rater.keyboard.press("1")
                rater.wait_for_load_state()
            rater.wait_for_selector("#queue-empty")
            assert len(seen) == 3 and dialogs == []
            assert "Earned 0.30" in rater.inner_text("#earnings")
            rater.screenshot(path=str(SHOTS / "rater-done.png"), full_page=True)

            admin.goto(project_url)
            assert admin.inner_text("#judgment-count") == "3"
            assert "rita" in admin.inner_text("#rater-stats")
            admin.screenshot(path=str(SHOTS / "admin-project.png"), full_page=True)
            with admin.expect_download() as info:
                admin.click("#export-preferences")
            exported = [json.loads(x) for x in Path(info.value.path()).read_text().splitlines()]
            assert len(exported) == 3 and {r["rater_id"] for r in exported} == {
                exported[0]["rater_id"]
            }
            assert any(
                r["labels"]["chosen"].get("helpful") or r["labels"]["rejected"].get("helpful")
                for r in exported
            )
            admin.goto(f"{server}/admin/ledger")
            admin.screenshot(path=str(SHOTS / "admin-ledger.png"), full_page=True)
            admin.goto(project_url + "/review")
            assert XSS not in admin.content() or admin.evaluate("window.__owned") is None
            admin.screenshot(path=str(SHOTS / "admin-review.png"), full_page=True)
        finally:
            browser.close()
