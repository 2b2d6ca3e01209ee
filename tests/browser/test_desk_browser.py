"""A support shift in headless Chromium, at a laptop's 1366×900 and a phone's 390×844: take a conversation,
answer with a canned reply typed as `/`, label it and filter by the label, write a private note, correct the
contact, export the conversation, send a template after the 24-hour window, see the buttons the AI offered,
get a browser notification, hand back; and the orders and settings pages.

Every page is checked as in test_layout (no horizontal overflow, every control clickable, nothing cut off),
with screenshots in test-artifacts/desk-*.png.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import Application

from bot.actors.conversation import Wake
from bot.app import build_app
from bot.domain.conversation import ConversationKey, OutboundMessage
from bot.web.keys import REGISTRY, REPOS
from bot.whatsapp.interactive import render_choices
from tests.browser.conftest import CHROMIUM
from tests.browser.test_layout import VIEWPORTS, check_page
from tests.browser.test_operator_pages import post_webhook_to, wait_handled_on
from tests.conftest import make_config
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import PHONE_NUMBER_ID, WABA_ID, text_message
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import wait_until
from tests.tools.conftest import load_sample_catalogue
from tests.web.helpers import ADMIN_PASSWORD

try:
    from playwright.async_api import Browser, Page, expect
except ImportError:  # pragma: no cover - playwright is a dev dependency
    Browser = Page = None  # type: ignore[assignment,misc]

pytestmark = [
    pytest.mark.one_backend("a page in the browser: the store under it is tested in both halves"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
    pytest.mark.skipif(Page is None, reason="needs the playwright Python package"),
]

ANNA, LUCA, GIULIA, SARA, PIETRO = "393336000001", "393336000002", "393336000003", "393336000004", "393336000005"
# Records what the page asks of the browser's Notification API (headless Chromium shows nothing).
NOTIFICATIONS = """
window.__notified = [];
window.Notification = class {
  static permission = "default";
  static async requestPermission() { window.Notification.permission = "granted"; return "granted"; }
  constructor(title, options) { window.__notified.push([title, (options || {}).body]); }
};
"""


@pytest.fixture
async def desk(aiohttp_server: Callable[[Application], Awaitable[TestServer]], tmp_path: Path,
               fake_openai: FakeOpenAI, fake_graph: FakeGraph) -> TestServer:
    """The app with templates to sync, a canned reply, an order, and five customers."""
    fake_graph.waba_id = WABA_ID
    fake_graph.add_template("order_ready", "it", "Ciao {{1}}, il tuo ordine {{2}} è pronto.", footer="Bottega Test")
    server = await aiohttp_server(build_app(make_config(tmp_path, fake_openai, fake_graph,
                                                        whatsapp_business_account_id=WABA_ID)))
    repos = server.app[REPOS]  # type: ignore[index]
    await repos.canned.save("grazie", "Grazie {{name}}, il tuo ordine {{order_code}} è in preparazione.", user="admin")
    await repos.canned.save("orari", "Siamo aperti dal lunedì al sabato, 9-19.", user="admin")
    stale = str(int(time.time() - 26 * 3600))
    for n, (phone, name, text, ts) in enumerate([
        (GIULIA, "Giulia", "Ciao, il mio ordine?", stale),
        (LUCA, "Luca", "Avete la borsa rossa?", None),
        (SARA, "Sara", "Che caffè avete?", None),
        (ANNA, "Anna Müller", "Vorrei parlare con un operatore, grazie", None),
    ]):
        await post_webhook_to(server, text_message(f"wamid.S{n}", phone, text, name=name, timestamp=ts))
        await wait_handled_on(server, n + 1)
    await load_sample_catalogue(repos)
    contact = await repos.contacts.for_conversation(PHONE_NUMBER_ID, ANNA)
    await repos.orders.create_draft(contact.id, [("CAF-ESP-250", 2), ("PAN-INT-500", 1)], notes="Citofono Müller")
    # The AI offered Sara buttons: the thread shows what she could tap.
    offered = render_choices("Quale preferisci?", [{"id": "esp", "title": "Espresso"}, {"id": "moka", "title": "Moka"},
                                                   {"id": "dek", "title": "Decaffeinato"}])
    key = ConversationKey(PHONE_NUMBER_ID, SARA)
    await repos.outbox.enqueue(key, [OutboundMessage("interactive", offered.text, offered.interactive)], author="ai")
    server.app[REGISTRY].tell(key, Wake())  # type: ignore[index]
    await wait_until(lambda: _settled(server), what="the interactive reply sent")
    await wait_until(lambda: _templates(server), what="the start-up template sync")
    return server


async def _settled(server: TestServer) -> bool:
    repos = server.app[REPOS]  # type: ignore[index]
    return not await repos.db.fetchval("SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending')")


async def _templates(server: TestServer) -> bool:
    return bool(await server.app[REPOS].templates.all())  # type: ignore[index]


async def sign_in(page: Page, base: str) -> None:
    await page.goto(base + "/inbox")
    await page.fill("#username", "admin")
    await page.fill("#password", ADMIN_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/inbox")


async def open_row(page: Page, device: str, text: str) -> None:
    """Open a conversation from the list (on a phone, from the list pane)."""
    if device == "phone" and await page.locator("#back").is_visible():
        await page.click("#back")
    await page.locator("#conversations > li", has_text=text).click()
    await expect(page.locator("#thread-name")).to_contain_text(text)


async def test_a_support_shift_on_a_laptop_and_a_phone(browser: Browser, desk: TestServer,
                                                       fake_graph: FakeGraph) -> None:
    for device in ("desktop", "phone"):
        await shift(browser, desk, fake_graph, device)


async def shift(browser: Browser, desk: TestServer, fake_graph: FakeGraph, device: str) -> None:
    """One operator's walk through the desk at one screen size (the phone's comes after the laptop's)."""
    base = str(desk.make_url("/")).rstrip("/")
    repos = desk.app[REPOS]  # type: ignore[index]
    context = await browser.new_context(viewport=VIEWPORTS[device], accept_downloads=True)
    await context.add_init_script(NOTIFICATIONS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(page, base)
    rows = page.locator("#conversations > li")
    everyone = 4 if device == "desktop" else 5  # Pietro asks for a person during the desktop run
    await expect(rows).to_have_count(everyone)
    await expect(page.locator("[data-tab=all] .count")).to_have_text(str(everyone))
    await expect(page.locator("[data-tab=needs_human] .count")).to_have_text("1")
    await check_page(page, f"desk-list-{device}")

    # Filter: the needs-human queue, and opt in to notifications for it.
    await page.click("[data-tab=needs_human]")
    await expect(rows).to_have_count(1)
    if device == "desktop":
        await page.click("#notify")
        await expect(page.locator("#notify")).to_have_text("Notifications on")
    else:
        await expect(rows.first).to_contain_text("Pietro")
        await page.click("[data-tab=all]")
    await open_row(page, device, "Anna Müller")

    # Take it: assigned to me, the AI holds.
    await page.click("#take")
    await expect(page.locator("#thread-holder")).to_have_text("taken by you")
    await expect(page.locator("#take")).to_be_hidden()
    await expect(page.locator("#resume")).to_be_visible()

    # A canned reply through "/": the picker filters as one types and fills the variables.
    box = page.locator("#reply-text")
    await box.fill("")
    await box.press_sequentially("/gr")
    picker = page.locator("#canned-picker")
    await expect(picker).to_be_visible()
    await expect(picker.locator("li[role=option]")).to_have_count(1)
    await page.screenshot(path=str(Path(__file__).resolve().parents[2] / "test-artifacts"
                                   / f"desk-canned-{device}.png"))
    await box.press("ArrowDown")  # wraps around the one choice
    await box.press("Enter")  # inserts it; the next Enter sends
    anna = await repos.contacts.for_conversation(PHONE_NUMBER_ID, ANNA)
    order_code = (await repos.orders.for_contact(anna.id))[0].code
    expected = f"Grazie {anna.name}, il tuo ordine {order_code} è in preparazione."
    await expect(box).to_have_value(expected)
    await expect(picker).to_be_hidden()
    if device == "desktop":
        await box.press("Enter")
        await expect(page.locator("#messages li[data-author=operator]").last).to_contain_text(expected)
        await fake_graph.wait_until(lambda: expected in fake_graph.texts_to(ANNA), what="the canned reply sent")
    else:
        await box.fill("")

    # A private note: in the thread, looking like no message, never sent.
    await page.click("#mode-note")
    await expect(page.locator("#send")).to_have_text("Add note")
    note = f"Richiamare nel pomeriggio ({device})"
    await box.fill(note)
    await page.click("#send")
    await expect(page.locator("#messages li.note").last).to_contain_text(note)
    assert not any(note in str(m) for m in fake_graph.sent)
    await page.click("#mode-reply")

    # A label made on the fly, and the list filtered by it.
    await page.click("#label-box summary")
    await page.fill("#label-input", f"Reso {device}")
    await page.select_option("#label-color", "#e53935")
    await page.click("#label-add button[type=submit]")
    await expect(page.locator("#thread-labels .chip")).to_contain_text([f"Reso {device}"])
    await check_page(page, f"desk-thread-{device}")

    # The contact panel: edit and save; the orders and the export are there too.
    await page.click("#contact-toggle")
    panel = page.locator("#contact")
    await expect(panel).to_be_visible()
    await expect(page.locator("#contact-orders")).to_contain_text(order_code)
    await page.fill("#contact-name", f"Anna Müller ({device})")
    await page.fill("#contact-email", "anna@example.com")
    await page.fill("#contact-company", "Bottega Müller")
    await page.click("#contact-save")
    await expect(page.locator("#contact-status")).to_have_text("Saved.")
    await expect(page.locator("#thread-name")).to_have_text(f"Anna Müller ({device})")
    saved = await repos.contacts.for_conversation(PHONE_NUMBER_ID, ANNA)
    assert (saved.name, saved.name_source, saved.company) == (f"Anna Müller ({device})", "operator",
                                                              "Bottega Müller")
    async with page.expect_download() as download_info:
        await page.click("#export-csv")
    download = await download_info.value
    exported = Path(await download.path()).read_text(encoding="utf-8-sig")
    assert exported.startswith("record,") and note in exported and "Vorrei parlare con un operatore" in exported
    await check_page(page, f"desk-contact-{device}")
    await page.click("#contact-close")
    await expect(panel).to_be_hidden()

    # Filter by the label (back in the list on a phone).
    if device == "phone":
        await page.click("#back")
    await page.click("[data-tab=all]")
    label_id = next(lb.id for lb in await repos.labels.all() if lb.name == f"Reso {device}")
    await page.select_option("#label-filter", str(label_id))
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Anna Müller")
    await page.select_option("#label-filter", "")
    await expect(rows).to_have_count(everyone)

    # The buttons the AI offered Sara.
    await open_row(page, device, "Sara")
    await expect(page.locator("#messages .offered-buttons li")).to_have_text(["Espresso", "Moka", "Decaffeinato"])

    # Giulia's last message is 26 hours old: the reply box is a template picker with a live preview.
    await open_row(page, device, "Giulia")
    await expect(page.locator("#thread-window")).to_contain_text("window closed")
    await expect(page.locator("#reply")).to_be_hidden()
    await expect(page.locator("#template-form")).to_be_visible()
    await page.fill("#template-param-0", "Giulia")
    await page.fill("#template-param-1", f"ORD-{device.upper()}")
    preview = f"Ciao Giulia, il tuo ordine ORD-{device.upper()} è pronto."
    await expect(page.locator("#template-preview")).to_contain_text(preview)
    await check_page(page, f"desk-template-{device}")
    await page.click("#template-send")
    await expect(page.locator("#messages li[data-type=template]").last).to_contain_text(preview)
    await fake_graph.wait_until(lambda: any(
        p["text"] == f"ORD-{device.upper()}" for t in fake_graph.templates_sent()
        for c in t.get("components", []) for p in c["parameters"]), what="the template send")

    # Hand Anna back: released, and the AI answers again.
    await open_row(page, device, "Anna Müller")
    await page.click("#resume")
    await expect(page.locator("#thread-holder")).to_be_hidden()
    await expect(page.locator("#take")).to_be_visible()

    if device == "desktop":
        # A new customer asks for a person: the opted-in browser is told.
        await post_webhook_to(desk, text_message("wamid.N1", PIETRO, "Voglio un operatore!", name="Pietro"))
        await wait_until(lambda: page.evaluate("() => window.__notified.length"), what="a notification")
        assert await page.evaluate("() => window.__notified") == [["A customer needs a person", "Pietro"]]

    for path, name in (("/orders", "orders"), ("/orders?status=draft", "orders-draft"), ("/settings", "settings")):
        await page.goto(base + path)
        await check_page(page, f"desk-{name}-{device}")
    await expect(page.locator("#canned")).to_contain_text("/grazie")
    await expect(page.locator("#templates-status")).to_contain_text("1 template stored")
    assert errors == [], errors
    await context.close()

