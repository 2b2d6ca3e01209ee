"""The inbox in headless Chromium: a message appears live, the operator replies and hands back."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot.app import build_app
from bot.web.keys import REPOS
from tests.conftest import make_config
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import contact, inbound_message, sign, text_message, webhook
from tests.fakes.openai_server import CallTools, FakeOpenAI, Reply

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PHONE = "393330000000"

pytestmark = [
    pytest.mark.one_backend("a page in the browser: the store under it is tested in both halves"),
    pytest.mark.skipif(shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
                       reason="Debian's chromium is not installed (.ci/run installs it)"),
]


@pytest.fixture
async def server(tmp_path: Path, fake_openai: FakeOpenAI, fake_graph: FakeGraph) -> AsyncIterator[TestServer]:
    """The real app on a real loopback port."""
    app = build_app(make_config(tmp_path, fake_openai, fake_graph, burst_window_ms=0))
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


async def signed_in_inbox(browser: Any, base: str) -> Any:
    """A page signed in as admin through the real login form, on /inbox."""
    page = await browser.new_page(viewport={"width": 1100, "height": 800})
    await page.goto(f"{base}/login?next=/inbox")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", "test-admin-password")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/inbox")
    return page


async def deliver(server: TestServer, payload: dict[str, Any]) -> None:
    """POST a signed webhook as Meta would."""
    import aiohttp
    import orjson

    from tests.conftest import APP_SECRET

    body = orjson.dumps(payload)
    async with aiohttp.ClientSession() as http, http.post(
        str(server.make_url("/webhooks/whatsapp")), data=body,
        headers={"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200


async def test_inbox_live_takeover_and_hand_back(
    server: TestServer, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    base = str(server.make_url("/")).rstrip("/")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await signed_in_inbox(browser, base)
            await expect(page.locator("#list-empty")).to_be_visible()

            # A customer writes: the conversation shows up without a reload.
            await deliver(server, text_message("wamid.B1", PHONE, "Ciao! Avete la borsa rossa?", name="Giulia"))
            item = page.locator("#conversations li", has_text="Giulia")
            await expect(item).to_be_visible(timeout=10_000)  # generous: tests run in parallel
            await item.click()
            await expect(page.locator("#messages li[data-author=customer]")).to_contain_text("borsa rossa")
            await expect(page.locator("#messages li[data-author=ai]")).to_contain_text("Echo: Ciao!")

            # The operator replies: it goes out through Graph and the AI pauses.
            await page.fill("#reply-text", "Sì, la abbiamo! Sono Marco del negozio.")
            await page.click("#reply button[type=submit]")
            await expect(page.locator("#messages li[data-author=operator]")).to_contain_text("Sono Marco")
            assert "Sì, la abbiamo! Sono Marco del negozio." in fake_graph.texts()
            await expect(page.locator("#thread-state")).to_contain_text("paused")
            calls = len(fake_openai.responses_requests())
            await deliver(server, text_message("wamid.B2", PHONE, "Perfetto, grazie Marco", name="Giulia"))
            await expect(page.locator("#messages li[data-author=customer]").last).to_contain_text("grazie Marco")
            assert len(fake_openai.responses_requests()) == calls

            # Hand back: the AI answers the next message.
            await page.click("#resume")
            await expect(page.locator("#thread-state")).to_contain_text("AI answering")
            await deliver(server, text_message("wamid.B3", PHONE, "Quando arriva la borsa?", name="Giulia"))
            await expect(page.locator("#messages li[data-author=ai]").last).to_contain_text(
                "Echo: Quando arriva la borsa?", timeout=10_000)
            await page.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)

            # The server limited this customer (as after a flood): the list and the thread say so.
            await server.app[REPOS].db.execute(  # type: ignore[index]
                "UPDATE conversations SET flag = 'rate_limited', flag_at = $1", time.time())
            await page.reload()
            await expect(page.locator("#conversations li", has_text="Giulia")).to_contain_text("rate-limited")
            await page.locator("#conversations li", has_text="Giulia").click()
            await expect(page.locator("#thread-flag")).to_contain_text("too many messages this hour")
            await page.screenshot(path=str(ARTIFACTS / "inbox-flagged.png"))

            # Phone width: the list and the thread stack.
            await page.set_viewport_size({"width": 380, "height": 760})
            await page.screenshot(path=str(ARTIFACTS / "inbox-phone.png"), full_page=True)
        finally:
            await browser.close()
    assert (ARTIFACTS / "inbox.png").stat().st_size > 10_000


async def test_test_chat_in_the_browser(server: TestServer, fake_openai: FakeOpenAI, fake_graph: FakeGraph) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    base = str(server.make_url("/")).rstrip("/")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await signed_in_inbox(browser, base)
            await page.click("#test-chat")
            await page.fill("#reply-text", "Buongiorno, siete aperti domenica?")
            await page.click("#reply button[type=submit]")
            await expect(page.locator("#messages li[data-author=ai]")).to_contain_text(
                "Echo: Buongiorno, siete aperti domenica?", timeout=10_000)
            await expect(page.locator("#conversations li", has_text="Test chat")).to_be_visible()
            await page.screenshot(path=str(ARTIFACTS / "test-chat.png"), full_page=True)
        finally:
            await browser.close()
    assert fake_graph.sent == []


async def test_the_thread_shows_offered_buttons_and_deleted_messages(
    server: TestServer, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    from playwright.async_api import async_playwright, expect

    # The real path: the model offers two choices (sent as reply buttons), then the customer deletes a message.
    choices = [{"id": "pickup", "title": "Ritiro", "description": None},
               {"id": "delivery", "title": "Consegna", "description": None}]
    fake_openai.script.extend([CallTools([("offer_choices", {"text": "Come preferisci?", "choices": choices})]),
                               Reply("(not used)")])
    await deliver(server, text_message("wamid.V1", PHONE, "Vorrei ordinare", name="Giulia"))
    await fake_graph.wait_until(lambda: len(fake_graph.interactives()) == 1, what="the buttons sent")
    await deliver(server, text_message("wamid.V2", PHONE, "Messaggio sbagliato", name="Giulia"))
    await fake_graph.wait_until(lambda: len(fake_graph.texts()) == 1, what="the reply to it")
    await deliver(server, webhook({"contacts": [contact(PHONE, "Giulia")], "messages": [
        inbound_message("wamid.V3", PHONE, "revoke", {"original_message_id": "wamid.V2"})]}))
    base = str(server.make_url("/")).rstrip("/")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await signed_in_inbox(browser, base)
            await page.locator("#conversations li", has_text="Giulia").click()
            offer = page.locator("#messages li[data-author=ai]").first
            await expect(offer.locator(".offered-buttons li")).to_have_text(["Ritiro", "Consegna"])
            await expect(offer).not_to_contain_text("[choices]")
            deleted = page.locator("#messages li.deleted")
            await expect(deleted).to_have_count(1, timeout=10_000)
            await expect(deleted.locator("s.deleted-text")).to_have_text("Messaggio sbagliato")
            await expect(deleted.locator(".deleted-tag")).to_have_text("Deleted by the customer")
            await expect(page.locator("#messages li", has_text="[revoke]")).to_have_count(0)
            await page.screenshot(path=str(ARTIFACTS / "inbox-offered-deleted.png"))
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.screenshot(path=str(ARTIFACTS / "inbox-offered-deleted-phone.png"))
        finally:
            await browser.close()
