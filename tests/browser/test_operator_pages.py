"""The operator pages in a real headless Chromium: sign in, save settings, upload a PDF, open diagnostics.

Screenshots of each page (phone and desktop widths) go to test-artifacts/. Skipped without /usr/bin/chromium.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bot.web.keys import REPOS
from tests.browser.conftest import ARTIFACTS, CHROMIUM
from tests.conftest import APP_SECRET
from tests.fakes.meta import signed, text_message
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import wait_until
from tests.web.helpers import ADMIN_PASSWORD, CATALOGUE, OPENAI_KEY, make_pdf

PHONE = {"width": 380, "height": 800}
DESKTOP = {"width": 1280, "height": 900}

try:
    from playwright.async_api import Browser, Page, async_playwright
except ImportError:  # pragma: no cover - playwright is a dev dependency
    async_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.one_backend("a page in the browser: the store under it is tested in both halves"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium)"),
    pytest.mark.skipif(async_playwright is None, reason="needs the playwright Python package"),
]


def _url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def _sign_in(page: Page, server: TestServer, target: str) -> None:
    await page.goto(_url(server, target))
    assert "/login" in page.url  # sent to sign in first, and back afterwards
    await page.fill("#username", "admin")
    await page.fill("#password", ADMIN_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(re.escape(target) + r"$"))


async def _no_horizontal_scroll(page: Page) -> None:
    overflow: Any = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than the phone screen"


async def test_sign_in_save_settings_upload_and_diagnostics(
    browser: Browser, server: TestServer, fake_openai: FakeOpenAI
) -> None:
    errors: list[str] = []
    context = await browser.new_context(viewport=PHONE)
    page = await context.new_page()
    # Script errors only: pages answered 400/401 on purpose are logged by Chromium as failed loads.
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    await page.goto(_url(server, "/login"))
    await _shot(page, "login-phone")
    await page.fill("#username", "admin")
    await page.fill("#password", "wrong password")
    await page.click("button[type=submit]")
    assert "Wrong username or password" in await page.inner_text("main")

    await _sign_in(page, server, "/settings")
    assert await page.inner_text("h1") == "AI Assistant Settings"
    await _no_horizontal_scroll(page)

    # The preview follows what is typed, with {{Cliente}} replaced by Nome Cliente.
    await page.fill("#client_name", "Forno Rossi")
    await page.fill("#instructions", "Sei l'assistente di {{Cliente}}. Saluta sempre da {{ Cliente }}!")
    preview = await page.inner_text("#instructions-preview")
    assert preview == "Sei l'assistente di Forno Rossi. Saluta sempre da Forno Rossi!"

    # A mistake is shown next to its field, and what was typed stays.
    await page.fill("#human_cooldown_seconds", "-3")
    await page.click("button.primary")
    assert "cannot be negative" in await page.inner_text("#human_cooldown_seconds-error")
    assert await page.input_value("#client_name") == "Forno Rossi"
    await _shot(page, "settings-error-phone")

    await page.fill("#human_cooldown_seconds", "60")
    await page.check("input[name=use_stored]")
    await page.fill("#openai_api_key", OPENAI_KEY)
    await page.fill("#model", "gpt-4.1-mini")
    await page.click("button.primary")
    await page.wait_for_url(re.compile(r"/settings\?done=saved$"))
    assert "Saved." in await page.inner_text("main")
    assert OPENAI_KEY not in await page.content()
    assert "sk-…XYZ9" in await page.inner_text("main")
    assert await page.input_value("#openai_api_key") == ""  # write-only

    # Test connection, with the saved key.
    await page.click("#test-connection")
    assert "Connected: the key works and model gpt-4.1-mini is available" in await page.inner_text("#test-result")

    # Knowledge base: tick it, save, upload a PDF; the status turns to ready by itself.
    await page.check("input[name=kb_enabled]")
    await page.click("button.primary")
    await page.wait_for_url(re.compile(r"/settings\?done=saved$"))
    await page.set_input_files("#pdf", files=[{"name": "Listino prezzi.pdf", "mimeType": "application/pdf",
                                               "buffer": make_pdf(CATALOGUE)}])
    await page.click("#knowledge button[type=submit]")
    await page.wait_for_url(re.compile(r"done=uploaded"))
    # app.js polls /api/settings while indexing (a string predicate would break the page's CSP).
    await page.wait_for_selector("#kb-status[data-status=ready]", timeout=15_000)
    assert "Listino prezzi.pdf" in await page.inner_text("#kb-status")
    await _shot(page, "settings-phone")
    await page.set_viewport_size(DESKTOP)
    await _shot(page, "settings-desktop")
    await page.set_viewport_size(PHONE)

    # Some traffic for the diagnostics.
    # One at a time: two messages in flight together may be folded into one turn (one reply).
    for n, text in enumerate(["Ciao", "Spedite all'estero?"], start=1):
        await post_webhook_to(server, text_message(f"wamid.BR{n}", "393331234567", text))
        await wait_handled_on(server, n)

    await page.click("nav >> text=Diagnostics")
    await page.wait_for_url(re.compile(r"/ai-diagnostics$"))
    assert await page.inner_text("#incoming") == "2"
    assert await page.inner_text("#outgoing") == "2"
    assert "ready (Listino prezzi.pdf, openai)" in await page.inner_text("#kb-diag")
    await _no_horizontal_scroll(page)
    await _shot(page, "diagnostics-phone")
    await page.set_viewport_size(DESKTOP)
    await _shot(page, "diagnostics-desktop")

    # Reset Sessions asks twice: the box, then a confirm() dialog.
    dialogs: list[str] = []

    async def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    await page.check("input[name=confirm]")
    await page.click("text=Reset Sessions")
    await page.wait_for_url(re.compile(r"reset=1$"))
    assert dialogs and dialogs[0].startswith("Reset every session?")
    assert "Sessions reset: 1 conversation starts afresh." in await page.inner_text("main")

    await page.click("text=Sign out")
    await page.wait_for_url(re.compile(r"/login$"))
    await page.goto(_url(server, "/ai-diagnostics"))
    assert "/login" in page.url
    assert errors == [], errors
    await context.close()


async def post_webhook_to(server: TestServer, payload: dict[str, Any]) -> None:
    """POST a signed webhook to the served app, as Meta would."""
    body, headers = signed(payload, APP_SECRET)
    async with aiohttp.ClientSession() as session, session.post(
        server.make_url("/webhooks/whatsapp"), data=body, headers=headers
    ) as resp:
        assert resp.status == 200


async def wait_handled_on(server: TestServer, count: int) -> None:
    """Wait until `count` inbox rows are handled, reading the served app's database."""
    repos = server.app[REPOS]  # type: ignore[index]

    async def done() -> bool:
        n = await repos.db.fetchval("SELECT COUNT(*) FROM inbox WHERE status != 'pending'")
        return bool(n >= count)

    await wait_until(done, what=f"{count} handled messages")
