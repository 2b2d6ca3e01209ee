"""Every operator page at a laptop's 1366×900 and a phone's 390×844, in headless Chromium.

On each page: nothing is wider than the screen, and every visible control (link, button, input) can be
clicked: scrolled into view, its centre hit-tests to itself and not to something covering it. Screenshots
go to test-artifacts/layout-*.png, to be looked at: a page that passes these checks can still look wrong.
"""

from __future__ import annotations

import secrets
import struct
import time
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot.tools.orders import token_hash
from bot.web.keys import REPOS
from tests.browser.conftest import ARTIFACTS, CHROMIUM
from tests.browser.test_operator_pages import post_webhook_to, wait_handled_on
from tests.fakes.graph_server import FakeGraph, GraphFailure
from tests.fakes.meta import load_sample_json, text_message
from tests.helpers import wait_until
from tests.tools.conftest import load_sample_catalogue
from tests.web.helpers import ADMIN_PASSWORD

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - playwright is a dev dependency
    async_playwright = None  # type: ignore[assignment]

VIEWPORTS = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
MEDIA_CUSTOMER = "393330000000"  # the sender of the image, voice note and document samples
FAILED_CUSTOMER = "393339990000"
LONG_NAME = "Maria Giovanna Della Rovere-Santangelo di Castelnuovo"
LONG_TEXT = ("Buongiorno, vorrei sapere se la borsa rossa in pelle è ancora disponibile nella taglia grande "
             "e se potete spedirla entro venerdì a Milano, grazie mille")

pytestmark = [
    pytest.mark.one_backend("a page in the browser: the store under it is tested in both halves"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
    pytest.mark.skipif(async_playwright is None, reason="needs the playwright Python package"),
]

# Runs in the page: each visible control, scrolled into view, must be the element found at its centre.
CHECK_CONTROLS = """() => {
  const selector = 'a[href], button, input:not([type=hidden]), select, textarea, summary, [role=option]';
  const describe = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    ' "' + (el.textContent || el.value || el.getAttribute('aria-label') || '').trim().slice(0, 40) + '"';
  const problems = [];
  let checked = 0;
  for (const el of document.querySelectorAll(selector)) {
    const box = el.getBoundingClientRect();
    if (!el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true }) || !box.width || !box.height) continue;
    el.scrollIntoView({ block: 'center', inline: 'center' });
    const r = el.getBoundingClientRect();
    const x = r.left + r.width / 2, y = r.top + r.height / 2;
    checked += 1;
    if (x < 0 || y < 0 || x >= window.innerWidth || y >= window.innerHeight) {
      problems.push(describe(el) + ' is off-screen at ' + Math.round(x) + ',' + Math.round(y));
      continue;
    }
    const hit = document.elementFromPoint(x, y);
    if (!hit || !(hit === el || el.contains(hit))) {
      problems.push(describe(el) + ' is covered by ' + (hit ? describe(hit) : 'nothing'));
    }
  }
  window.scrollTo(0, 0);
  return { checked, problems };
}"""

# Badges and names must not be cut off at the screen's edge (an overflow: hidden box would hide it).
CHECK_CLIPPED = """() => [...document.querySelectorAll('.badge, h1, .nav a, .thread-actions button')]
  .filter((el) => el.checkVisibility() && el.getBoundingClientRect().width > 0)
  .filter((el) => { const r = el.getBoundingClientRect(); return r.left < -1 || r.right > window.innerWidth + 1; })
  .map((el) => el.className + ' "' + el.textContent.trim().slice(0, 30) + '"')"""


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour, so the inline preview has a picture to show."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture
async def seeded(server: TestServer, fake_graph: FakeGraph) -> TestServer:
    """The served app with a few conversations: long names and texts, media, a failed send."""
    srv = server
    fake_graph.add_media("1000000000000101", png(320, 200, (70, 130, 180)), "image/png")
    fake_graph.add_media("1000000000000102", b"OggS fake voice note", "audio/ogg")
    fake_graph.add_media("1000000000000103", b"%PDF-1.4 fake receipt", "application/pdf")
    for sample in ("image", "audio_voice", "document"):
        await post_webhook_to(srv, load_sample_json(sample))
    for n, (phone, name) in enumerate([("393331234567", LONG_NAME), ("393337654321", "Luca")], start=1):
        await post_webhook_to(srv, text_message(f"wamid.L{n}", phone, LONG_TEXT, name=name))
    await wait_handled_on(srv, 5)
    await replies_settled(srv)  # else a reply still on its way would take the failure meant for Franco
    # Meta refuses the next reply for good (the 24-hour window is closed): the send fails, the state stays.
    fake_graph.errors.append(GraphFailure.re_engagement())
    await post_webhook_to(srv, text_message("wamid.F1", FAILED_CUSTOMER, "Ciao, ci siete?", name="Franco"))
    await wait_handled_on(srv, 6)
    await replies_settled(srv)
    return srv


async def replies_settled(server: TestServer) -> None:
    """Wait until no reply is queued or being sent."""
    repos = server.app[REPOS]  # type: ignore[index]

    async def settled() -> bool:
        return not await repos.db.fetchval("SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending')")

    await wait_until(settled, what="replies sent or failed")


async def order_link(server: TestServer) -> str:
    """A confirmation link for a draft order, made as the generate_order_confirmation_form tool makes one."""
    repos = server.app[REPOS]  # type: ignore[index]
    await load_sample_catalogue(repos)
    contact = await repos.contacts.ensure("100000000000001", MEDIA_CUSTOMER, wa_id=MEDIA_CUSTOMER,
                                          profile_name="Giulia", language="it")
    order = await repos.orders.create_draft(contact.id, [("BOR-ROS-PEL", 1), ("CAF-ESP-250", 3)],
                                            notes="Consegna al portiere, citofono Rossi")
    token = secrets.token_urlsafe(32)
    now = time.time()
    await repos.orders.add_confirmation(order.id, token_hash(token), now=now, expires_at=now + 3600)
    return f"/orders/confirm/{token}"


async def check_page(page: Page, name: str) -> int:
    """No horizontal overflow, every control clickable, nothing cut off; then a full-page screenshot."""
    overflow: Any = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow}px wider than the screen"
    result: Any = await page.evaluate(CHECK_CONTROLS)
    assert result["problems"] == [], f"{name}: {result['problems']}"
    clipped: Any = await page.evaluate(CHECK_CLIPPED)
    assert clipped == [], f"{name}: cut off at the screen's edge: {clipped}"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"layout-{name}.png"), full_page=True)
    checked: int = result["checked"]
    return checked


async def test_every_page_fits_and_every_control_can_be_clicked(browser: Browser, seeded: TestServer) -> None:
    confirm_path = await order_link(seeded)
    for device in VIEWPORTS:
        await walk_every_page(browser, seeded, device, confirm_path)


async def walk_every_page(browser: Browser, seeded: TestServer, device: str, confirm_path: str) -> None:
    """Sign in and visit every page at one screen size, checking each (names carry the device)."""
    context = await browser.new_context(viewport=VIEWPORTS[device])
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    base = str(seeded.make_url("/")).rstrip("/")

    # The address the server prints leads to sign-in, then to the inbox.
    await page.goto(base + "/")
    await page.wait_for_url(f"{base}/login?next=/inbox")
    assert await check_page(page, f"login-{device}") >= 3
    await page.fill("#username", "admin")
    await page.fill("#password", ADMIN_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/inbox")

    # The list, nothing chosen yet: no thread controls anywhere; on a desk an invitation to choose.
    rows = page.locator("#conversations li")
    await expect(rows).to_have_count(4)
    await expect(page.locator("#pause")).to_be_hidden()
    await expect(page.locator("#resume")).to_be_hidden()
    await expect(page.locator("#reply-text")).to_be_hidden()
    if device == "desktop":
        await expect(page.locator("#thread-empty")).to_contain_text("Choose a conversation")
        # The content uses the laptop's width (it was capped at 60 rem, 57% of this screen).
        used: Any = await page.evaluate("document.querySelector('main').getBoundingClientRect().width")
        assert used >= 0.9 * VIEWPORTS["desktop"]["width"] - 40, used
    else:
        await expect(page.locator("#thread-empty")).to_be_hidden()
    failed_row = rows.filter(has_text="Franco")
    await expect(failed_row.locator(".badge")).to_have_text("failed · not delivered")
    await expect(page.locator("#test-chat")).to_be_visible()
    await page.locator("#messages").wait_for(state="hidden")
    assert await check_page(page, f"inbox-list-{device}") >= 7

    # A thread with a photo, a voice note and a document.
    await rows.filter(has_text="+" + MEDIA_CUSTOMER).click()
    photo = page.locator("#messages img.media")
    await expect(photo).to_be_visible()
    await expect(photo).to_have_js_property("naturalWidth", 320)  # the picture itself, through the media proxy
    assert await photo.get_attribute("loading") == "lazy"
    assert await page.locator("#messages a.media-link:has(img)").get_attribute("href") == await photo.get_attribute(
        "src")
    voice = page.locator("#messages li[data-type=audio]")
    await expect(voice.locator("audio[controls]")).to_have_count(1)
    await expect(voice.locator(".transcript")).to_have_text("Transcript: trascrizione di prova")
    await expect(page.locator("#messages li[data-type=document] a.media-link")).to_contain_text("document")
    await expect(page.locator("#pause")).to_be_visible()
    if device == "phone":
        await expect(page.locator("#conversations")).to_be_hidden()  # one pane at a time
    await check_page(page, f"inbox-thread-{device}")

    # The conversation whose reply Meta refused says so in its header.
    if device == "phone":
        await page.click("#back")
        await expect(page.locator("#thread")).to_be_hidden()
    await rows.filter(has_text="Franco").click()
    await expect(page.locator("#thread-state")).to_have_text("failed · not delivered")
    await expect(page.locator("#messages .fail")).not_to_have_count(0)

    for path, name in (("/settings", "settings"), ("/ai-diagnostics", "diagnostics"), ("/orders", "orders")):
        await page.goto(base + path)
        await check_page(page, f"{name}-{device}")

    await page.goto(base + confirm_path)
    await expect(page.locator("#total")).to_be_visible()
    await check_page(page, f"order-{device}")
    assert errors == [], errors
    await context.close()


async def test_reply_box_enter_sends_and_search_says_what_found_nothing(
    browser: Browser, server: TestServer, fake_graph: FakeGraph
) -> None:
    await post_webhook_to(server, text_message("wamid.E1", "393337654321", LONG_TEXT, name="Luca"))
    await wait_handled_on(server, 1)
    page = await browser.new_page(viewport=VIEWPORTS["desktop"])
    base = str(server.make_url("/")).rstrip("/")
    await page.goto(base + "/inbox")
    await page.fill("#username", "admin")
    await page.fill("#password", ADMIN_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/inbox")

    await page.locator("#conversations li", has_text="Luca").click()
    box = page.locator("#reply-text")
    await box.fill("Buongiorno Luca,")
    await box.press("Shift+Enter")  # a new line, nothing sent
    await box.press_sequentially("la borsa è disponibile.")
    assert await box.input_value() == "Buongiorno Luca,\nla borsa è disponibile."
    await expect(page.locator("#messages li[data-author=operator]")).to_have_count(0)
    first = await page.locator("#messages li[data-author=customer]").first.element_handle()
    await box.press("Enter")
    await expect(page.locator("#messages li[data-author=operator]")).to_contain_text("la borsa è disponibile.")
    # The thread was refreshed around the messages already shown (a playing voice note would play on).
    assert await first.evaluate("li => li.isConnected")
    await expect(box).to_have_value("")
    assert "Buongiorno Luca,\nla borsa è disponibile." in fake_graph.texts()

    await page.fill("#search", "Zanzibar")
    await expect(page.locator("#list-empty")).to_have_text("No conversations match “Zanzibar”.")
    await expect(page.locator("#conversations li")).to_have_count(0)
    await page.fill("#search", "")
    await expect(page.locator("#conversations li")).to_have_count(1)
    await expect(page.locator("#list-empty")).to_be_hidden()
    await page.close()
