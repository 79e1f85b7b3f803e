"""The web UI in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
chat with streamed tokens, switching models, stopping a generation, the models and runs pages,
and security case 20 (hostile model output rendered inert). Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.serve.conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed")

# Records every distinct length of the newest assistant reply, so a test can tell streaming
# (many growing lengths) from a reply that appeared all at once.
WATCH_LENGTHS = """() => {
  window.__lengths = [];
  new MutationObserver(() => {
    const bodies = document.querySelectorAll('.msg.assistant .body');
    const last = bodies[bodies.length - 1];
    const n = last ? last.textContent.length : 0;
    if (window.__lengths[window.__lengths.length - 1] !== n) window.__lengths.push(n);
  }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


def open_page(browser, server):
    # bypass_csp: Playwright's own waits evaluate strings, which the page's CSP forbids. It also makes
    # case 20 stricter: the renderer must be safe by itself, without the CSP's help.
    page = browser.new_page(viewport={"width": 1200, "height": 800}, bypass_csp=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model-select option').length > 0", timeout=15000)
    return page, errors


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def test_chat_streams_switches_model_and_screenshots(browser, tiny_server):
    page, errors = open_page(browser, tiny_server)
    assert page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)") == ["tiny", "tiny-b"]
    page.fill("#max-tokens", "60")  # the tiny model's context is 256 tokens: leave room for a second turn
    page.fill("#temperature", "0")
    page.evaluate(WATCH_LENGTHS)
    send(page, "Hello there")
    page.wait_for_selector(".msg.assistant:not(.streaming)", timeout=30000)
    lengths = page.evaluate("window.__lengths")
    assert lengths[-1] > 0 and lengths == sorted(lengths), lengths  # (the tiny model is too quick to watch)
    first = page.locator(".msg.assistant .body").nth(0).text_content()
    assert len(first) > 0
    assert page.locator(".msg.assistant .model-tag").nth(0).text_content() == "tiny"

    page.select_option("#model-select", "tiny-b")
    page.fill("#max-tokens", "20")
    send(page, "Now the other one")
    page.wait_for_function("document.querySelectorAll('.msg.assistant:not(.streaming)').length == 2", timeout=30000)
    assert page.locator(".msg.assistant .model-tag").nth(1).text_content() == "tiny-b"
    assert page.locator(".msg.user").count() == 2  # the conversation is kept in the page
    assert page.locator(".msg.error").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-ui-chat.png"), full_page=True)
    assert errors == []
    page.close()


@pytest.mark.slow
def test_streamed_tokens_and_stop_button(browser, smol_server):
    page, errors = open_page(browser, smol_server)
    page.fill("#max-tokens", "1000")
    page.evaluate(WATCH_LENGTHS)
    send(page, "Write a long story about a dragon.")
    page.wait_for_function("(() => { const b = document.querySelector('.msg.assistant .body');"
                           " return b && b.textContent.length > 20; })()", timeout=60000)
    lengths = page.evaluate("window.__lengths")
    assert len([n for n in lengths if n > 0]) >= 3 and lengths == sorted(lengths), lengths  # streamed
    assert page.is_visible("#stop")
    page.click("#stop")
    page.wait_for_selector(".msg.assistant.stopped", timeout=10000)
    assert not page.is_visible("#stop") and page.is_enabled("#send")
    deadline = time.monotonic() + 10
    while smol_server.metric("llmos_active_sequences", '{model="smollm2"}') != 0:
        assert time.monotonic() < deadline, "the server kept generating after Stop"
        time.sleep(0.2)
    assert errors == []
    page.close()


def test_models_and_runs_pages(browser, tiny_server):
    page, errors = open_page(browser, tiny_server)
    page.click("#nav-models")
    page.wait_for_selector("#models-table tbody tr", timeout=10000)
    assert "tiny" in page.locator("#models-table tbody").text_content()
    page.click("#nav-runs")
    page.wait_for_selector("#runs-list p, #runs-list .run", timeout=10000)
    page.screenshot(path=str(ARTIFACTS / "serve-ui-runs.png"))
    assert errors == []
    page.close()


def test_20_hostile_model_output_is_inert(browser, tiny_server):
    """Security case 20: <script>, <img onerror> and javascript: links in a reply stay text."""
    page, errors = open_page(browser, tiny_server)
    hostile = ['Here: <script>window.__pwned = 1</script>', ' <img src=x onerror="window.__pwned = 2">',
               '\n\n**bold** [click](javascript:window.__pwned=3) <svg onload="window.__pwned=4">',
               '\n\n```html\n<iframe src="javascript:window.__pwned=5"></iframe>\n```']
    chunks = [{"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "tiny",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "tiny",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]} for text in hostile]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    send(page, "say something nasty")
    page.wait_for_selector(".msg.assistant:not(.streaming)", timeout=10000)
    page.wait_for_timeout(300)
    reply = page.locator(".msg.assistant .body")
    text = reply.text_content()
    for fragment in ("<script>window.", "</script>", "<img src=x onerror=", "<svg onload=", "<iframe src="):
        assert fragment in text  # shown as the characters they are
    assert page.evaluate("window.__pwned") is None
    for tag in ("script", "img", "svg", "iframe"):
        assert reply.locator(tag).count() == 0
    assert reply.locator("a").count() == 0  # a javascript: link is not made a link
    assert reply.locator("strong").count() >= 1  # markdown still renders
    page.screenshot(path=str(ARTIFACTS / "serve-ui-hostile-output.png"))
    assert errors == []
    page.close()
