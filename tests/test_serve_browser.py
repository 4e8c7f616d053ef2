"""The chat page in a real browser: Debian's chromium, headless, driven by playwright against serve.py.

Type a message and see the streamed reply, press Stop mid-answer (and see the server stop decoding), start a
new chat; at laptop and phone widths. Screenshots go to $NANOPHI_SCREENS when set (else the test's temp dir).
Skips, saying why, where playwright or chromium is missing.
"""

import os
import re
import shutil

import pytest

from test_serve import Served, serve_out_dir  # noqa: F401  (the fixture)

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.isfile(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM=/path/to/it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.mark.slow
@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_chat_page_streams_stops_and_starts_over(browser, serve_out_dir, tmp_path, width, height):  # noqa: F811
    served = Served(serve_out_dir, "--max_tokens_cap=400")
    screens = os.environ.get("NANOPHI_SCREENS") or str(tmp_path)
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(served.url + "/")
        page.wait_for_selector("#tag option[value=Math]", state="attached")
        assert page.locator("#model").inner_text().startswith("out-serve")

        # a message with a tag from the picker: the reply streams in, then the speed shows
        page.select_option("#tag", "Math")
        page.fill("#max_tokens", "24")
        page.fill("#input", "1+1=")
        page.press("#input", "Enter")
        page.wait_for_function("document.querySelectorAll('.msg.bot').length === 1 && "
                               "!document.querySelector('.msg.bot').classList.contains('streaming')")
        assert page.locator(".msg.user").inner_text() == "[Math] 1+1="
        assert re.match(r"\d+ tokens", page.locator(".meta").first.inner_text())
        page.screenshot(path=os.path.join(screens, f"chat-{width}x{height}.png"))

        # a long answer, stopped as soon as it starts: the server stops decoding it
        page.fill("#max_tokens", "400")
        page.fill("#input", "[Code] def add(a, b):")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.msg.bot').length === 2 && "
                               "document.querySelectorAll('.msg.bot')[1].textContent.length > 0")
        assert page.locator("#send").inner_text() == "Stop"
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.meta')[1].textContent.includes('stopped')")
        assert page.locator("#send").inner_text() == "Send"
        health = served.wait_idle(timeout=5)
        assert health["running"] == 0 and health["waiting"] == 0
        stopped_at = int(page.locator(".meta").nth(1).inner_text().split()[0])
        assert stopped_at < 400
        page.screenshot(path=os.path.join(screens, f"stopped-{width}x{height}.png"))

        # New chat empties the page; the next question goes without the old history
        page.click("#new")
        assert page.locator(".msg").count() == 0
        page.fill("#max_tokens", "8")
        page.fill("#input", "hello")
        with page.expect_request("**/v1/chat/completions") as request:
            page.press("#input", "Enter")
        assert [m["content"] for m in request.value.post_data_json["messages"]] == ["hello"]
        page.wait_for_function("document.querySelectorAll('.msg.bot').length === 1 && "
                               "!document.querySelector('.msg.bot').classList.contains('streaming')")
        assert page.locator(".msg").count() == 2
    finally:
        page.close()
        served.stop()
