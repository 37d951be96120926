"""A user opens the chat page in a real browser (Playwright driving Debian's Chromium against a
server process serving the tiny model), is asked which personality they want, sends a message,
watches the reply stream in, presses thumbs down with a comment, and the rating is in the
feedback export. Saves docs/screenshots/chat.png and chat-personality.png."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rlhfkit.cli import main

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
XSS = "<script>window.__owned = 1</script>"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent (install Debian's chromium: make browser-deps)",
    ),
]

# Counts how often a reply's text changes while it arrives: more than once means it streamed.
WATCH_REPLIES = """
window.__replyUpdates = 0;
new MutationObserver(function (records) {
  records.forEach(function (r) {
    var el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    if (el && el.closest && el.closest(".reply")) window.__replyUpdates += 1;
  });
}).observe(document.getElementById("messages"),
           {subtree: true, childList: true, characterData: true});
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    from rlhfkit.store.migrate import open_store
    from rlhfkit.store.users import create_user

    url = f"sqlite:///{tmp_path}/chat.db"
    create_user(open_store(url), "chatter", "chatter-password")
    port = _free_port()
    env = {**os.environ, "RLHFKIT_DATABASE_URL": url, "RLHFKIT_RUNS_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", "serve", "--port", str(port), "--models", "tiny"],
        env=env,
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
    yield base, url
    proc.terminate()
    proc.wait(timeout=10)


def test_chat_stream_thumbs_down_and_export(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, url = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(f"{base}/login")
            page.fill("input[name=username]", "chatter")
            page.fill("input[name=password]", "chatter-password")
            page.click("button[type=submit]")
            page.click("header nav >> text=Chat")
            assert "What personality do you want?" in page.inner_text("#personality-picker")
            assert "rlhfkit personality train concise" in page.inner_text("#personality-concise")
            page.screenshot(path=str(SHOTS / "chat-personality.png"), full_page=True)

            # The random tiny model samples its end token within the first two tokens about
            # once in 150 replies, which leaves nothing to stream: such a chat is abandoned and
            # a new one started (three in a row: about 1 in 3 million; a reply that never streams fails
            # all three).
            for attempt in range(3):
                if attempt:
                    page.click("header nav >> text=Chat")
                page.click("#new-chat button[type=submit]")
                page.wait_for_selector("#chat-form")
                page.evaluate(WATCH_REPLIES)
                page.click("#chat-form summary")  # the settings fold
                page.fill("#max-tokens", "40")
                page.fill("#chat-input", "Hello, who are you?")
                page.press("#chat-input", "Enter")
                done = page.wait_for_selector(
                    ".msg.assistant[data-completion] .rate", timeout=90_000
                )
                reply = page.locator(".msg.assistant .reply").first.inner_text()
                if page.evaluate("window.__replyUpdates") > 1:
                    break
            assert reply.strip(), "the reply is empty"
            assert page.evaluate("window.__replyUpdates") > 1, "the reply did not stream"
            assert done.is_visible()

            page.fill(".msg.assistant .comment", "Not an answer to my question")
            page.click(".msg.assistant .thumb.down")
            page.wait_for_selector(".msg.assistant .saved:has-text('saved')")
            assert page.get_attribute(".msg.assistant .thumb.down", "aria-pressed") == "true"

            # a script in a message is shown as text, live and after a reload
            page.fill("#chat-input", XSS)
            page.press("#chat-input", "Enter")
            page.wait_for_function(
                "document.querySelectorAll('.msg.assistant[data-completion]').length == 2",
                timeout=90_000,
            )
            page.reload()
            assert XSS in page.inner_text("#messages")
            assert page.evaluate("window.__owned") is None
            assert page.get_attribute(".msg.assistant .thumb.down", "aria-pressed") == "true"
            page.screenshot(path=str(SHOTS / "chat.png"), full_page=True)
        finally:
            browser.close()

    out = tmp_path / "feedback.jsonl"
    assert main(["feedback", "export", "--out", str(out), "--database-url", url]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["label"] is False and row["meta"]["comment"] == "Not an answer to my question"
    assert row["prompt"] == [{"role": "user", "content": "Hello, who are you?"}]
    assert row["completion"][0]["content"] == reply
    assert row["meta"]["model"] == "tiny"
