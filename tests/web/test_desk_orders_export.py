"""The orders page and its JSON twin (operators confirm and cancel, with the customer's effects), and the
exports of a conversation or a date range as CSV and JSON."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from bot.persistence.crm import Order
from tests.conftest import API_TOKEN, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import text_message
from tests.helpers import repos_of, sign_in, wait_handled, wait_until
from tests.tools.conftest import load_sample_catalogue
from tests.web.helpers import csrf_in, post_form

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
GIULIA, MARCO = "393335000001", "393335000002"


async def drafts(client: TestClient) -> tuple[Order, Order]:
    """Giulia's two draft orders: one that stock allows, one that it does not once the first is confirmed."""
    repos = repos_of(client)
    await load_sample_catalogue(repos)
    contact = await repos.contacts.for_conversation("100000000000001", GIULIA)
    assert contact is not None
    await repos.contacts.update(contact.id, source="operator", name="Giulia Conti")
    await repos.db.execute("UPDATE contacts SET language = 'it' WHERE id = $1", contact.id)
    first = await repos.orders.create_draft(contact.id, [("CAF-ESP-250", 40), ("PAN-INT-500", 2)], notes="Portineria")
    second = await repos.orders.create_draft(contact.id, [("CAF-ESP-250", 30)], notes=None)
    return first, second


async def test_operators_confirm_and_cancel_orders(client: TestClient, fake_graph: FakeGraph) -> None:
    await post_webhook(client, text_message("wamid.O1", GIULIA, "Vorrei del caffè", name="Giulia"))
    await wait_handled(client, 1)
    first, second = await drafts(client)
    repos = repos_of(client)
    csrf = await sign_in(client)
    page = await (await client.get("/orders")).text()
    assert first.code in page and second.code in page and "Caffè Espresso 250g" in page and "Portineria" in page
    assert "Giulia Conti" in page and page.count('action="/orders/') == 4  # confirm and cancel, twice
    listed = await (await client.get("/api/orders", params={"status": "draft"}, headers=AUTH)).json()
    assert [o["code"] for o in listed["orders"]] == [second.code, first.code]  # newest first
    assert listed["orders"][1]["lines"][0] | {"line_total": ""} == {
        "sku": "CAF-ESP-250", "name": "Caffè Espresso 250g", "quantity": 40, "unit_price_cents": 690,
        "line_total_cents": 27600, "line_total": ""}
    tomorrow = time.strftime("%Y-%m-%d", time.localtime(time.time() + 86400))
    today = time.strftime("%Y-%m-%d")
    assert (await (await client.get("/api/orders", params={"from": tomorrow}, headers=AUTH)).json())["orders"] == []
    assert len((await (await client.get("/api/orders", params={"from": today, "to": today},
                                        headers=AUTH)).json())["orders"]) == 2
    for params, words in (({"status": "sent"}, "status is one of"), ({"from": "yesterday"}, '"from" is a date'),
                          ({"from": today, "to": "2000-01-01"}, '"to" is before "from"')):
        resp = await client.get("/api/orders", params=params, headers=AUTH)
        assert resp.status == 400 and words in (await resp.json())["error"], params
    typed = await client.get("/orders", params={"from": "yesterday"})
    shown = await typed.text()
    assert typed.status == 400 and "is a date like 2025-03-01" in shown and first.code in shown

    # Confirmed by an operator: stock taken, the customer told on WhatsApp, who did it in the audit log.
    resp = await post_form(client, f"/orders/{first.id}/confirm", csrf, back="status=draft")
    assert resp.status == 303 and resp.headers["Location"] == "/orders?status=draft&done=confirmed"
    assert (await repos.products.get("CAF-ESP-250")).stock == 20  # type: ignore[union-attr]
    await fake_graph.wait_until(lambda: any(first.code in t for t in fake_graph.texts_to(GIULIA)),
                                what="the confirmation text")
    assert f"Grazie! Il tuo ordine {first.code} è confermato." in fake_graph.texts_to(GIULIA)[-1]
    audit = await repos.audit.recent(5, action="order_confirmed_by_operator")
    assert [(a["username"], a["detail"]) for a in audit] == [("admin", first.code)]
    assert await repos.db.fetchval("SELECT COUNT(*) FROM events WHERE kind = 'order.confirmed'") == 1
    again = await client.post(f"/api/orders/{first.id}/confirm", headers=AUTH)
    assert again.status == 409 and (await again.json())["state"] == "already_confirmed"
    # The second order now wants more coffee than is left.
    short = await post_form(client, f"/orders/{second.id}/confirm", csrf)
    assert short.status == 409 and "Not enough stock for: Caffè Espresso 250g" in await short.text()
    assert (await repos.orders.get(second.id)).status == "draft"  # type: ignore[union-attr]

    # Cancelling a confirmed order gives its stock back; the customer's link says it was cancelled.
    cancelled = await client.post(f"/api/orders/{first.id}/cancel", headers=AUTH)
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    assert (await repos.products.get("CAF-ESP-250")).stock == 60  # type: ignore[union-attr]
    assert (await client.post(f"/api/orders/{first.id}/confirm", headers=AUTH)).status == 409
    assert (await client.post("/api/orders/999999/cancel", headers=AUTH)).status == 404
    confirmed = await client.post(f"/api/orders/{second.id}/confirm", headers=AUTH)
    assert confirmed.status == 200 and (await confirmed.json())["status"] == "confirmed"
    page = await (await client.get("/orders", params={"status": "cancelled"})).text()
    assert first.code in page and second.code not in page
    assert "cancelled" in [a["action"].split("_")[1] for a in await repos.audit.recent(10)
                           if a["action"].startswith("order_")]
    assert csrf_in(page)


def rows_of(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


async def test_exports_of_a_conversation_and_of_a_range(client: TestClient, fake_graph: FakeGraph) -> None:
    await post_webhook(client, text_message("wamid.X1", GIULIA, "=HYPERLINK(\"http://x\")", name="Giulia"))
    await post_webhook(client, text_message("wamid.X2", MARCO, "Ciao, sono Marco", name="Marco"))
    await wait_handled(client, 2)
    await client.post("/api/test-chat/messages", json={"text": "solo una prova"}, headers=AUTH)
    await wait_handled(client, 3)
    await client.post(f"/api/conversations/{GIULIA}/notes", json={"text": "Richiamare domani"}, headers=AUTH)
    # Marco's messages were a week ago: outside the range exported below.
    week_ago = time.time() - 7 * 86400
    repos = repos_of(client)
    await repos.db.execute("UPDATE inbox SET received_at = $1 WHERE customer_id = $2", week_ago, MARCO)
    await repos.db.execute("UPDATE outbox SET created_at = $1 WHERE customer_id = $2", week_ago, MARCO)

    resp = await client.get(f"/api/conversations/{GIULIA}/export", params={"format": "csv"}, headers=AUTH)
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="conversation-{GIULIA}.csv"'
    assert resp.headers["Cache-Control"] == "no-store"
    rows = rows_of(await resp.text())
    assert [(r["record"], r["direction"], r["author"], r["text"]) for r in rows] == [
        ("message", "in", "customer", "'=HYPERLINK(\"http://x\")"),  # a formula is made plain text
        ("message", "out", "ai", "Echo: =HYPERLINK(\"http://x\")"),
        ("note", "note", "BOT_API_TOKEN", "Richiamare domani"),
    ]
    assert rows[1]["status"] == "sent" and float(rows[0]["created_at"]) <= float(rows[1]["created_at"])
    assert rows[0]["created_at_iso"].endswith("Z")

    as_json = orjson.loads(await (await client.get(f"/api/conversations/{GIULIA}/export", params={"format": "json"},
                                                   headers=AUTH)).read())
    assert as_json["conversation"]["wa_id"] == GIULIA
    assert [(m["direction"], m["author"], m["text"], m["status"]) for m in as_json["messages"]] == [
        ("in", "customer", "=HYPERLINK(\"http://x\")", "done"), ("out", "ai", "Echo: =HYPERLINK(\"http://x\")", "sent")]
    assert [(n["author"], n["text"]) for n in as_json["notes"]] == [("BOT_API_TOKEN", "Richiamare domani")]
    assert all(set(m) >= {"direction", "author", "text", "status", "created_at"} for m in as_json["messages"])

    today = time.strftime("%Y-%m-%d")
    ranged: Any = orjson.loads(await (await client.get("/api/export", params={"from": today, "to": today,
                                                                             "format": "json"}, headers=AUTH)).read())
    assert {m["customer_id"] for m in ranged["messages"]} == {GIULIA}  # not Marco's (older), not the test chat
    assert len(ranged["messages"]) == 2 and [n["text"] for n in ranged["notes"]] == ["Richiamare domani"]
    week = time.strftime("%Y-%m-%d", time.localtime(week_ago))
    csv_range = rows_of(await (await client.get("/api/export", params={"from": week, "to": today},
                                                headers=AUTH)).text())
    assert [r["customer_id"] for r in csv_range if r["record"] == "message"] == [MARCO, MARCO, GIULIA, GIULIA]
    for path, params, words in (
        ("/api/export", {"from": today}, "give the range"),
        ("/api/export", {"from": "01/03/2025", "to": today}, '"from" is a date'),
        ("/api/export", {"from": today, "to": today, "format": "xml"}, "csv or json"),
        (f"/api/conversations/{GIULIA}/export", {"format": "pdf"}, "csv or json"),
    ):
        bad = await client.get(path, params=params, headers=AUTH)
        assert bad.status == 400 and words in (await bad.json())["error"], params
    assert (await client.get("/api/conversations/nobody/export", headers=AUTH)).status == 404
    assert (await client.get("/api/export", params={"from": today, "to": today})).status == 401

    async def audited() -> bool:
        return len(await repos.audit.recent(10, action="export_range")) == 2

    await wait_until(audited, what="the exports in the audit log")


async def test_the_settings_page_exports_a_range_in_the_browser(client: TestClient, fake_graph: FakeGraph) -> None:
    await post_webhook(client, text_message("wamid.XR1", GIULIA, "Un messaggio da esportare", name="Giulia"))
    await wait_handled(client, 1)
    await sign_in(client)
    page = await (await client.get("/settings")).text()
    assert 'id="export-range"' in page and 'action="/api/export"' in page
    today = time.strftime("%Y-%m-%d")
    # What the form's CSV button sends: a GET with the signed-in session (no token needed).
    resp = await client.get("/api/export", params={"from": today, "to": today, "format": "csv"})
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert "Un messaggio da esportare" in await resp.text()
