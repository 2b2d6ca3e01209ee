"""Each built-in tool called by the (fake) model through the real app, and the order confirmation page."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from bot.ai.privacy import PHONE_MASK
from bot.tools.orders import token_hash
from tests.conftest import ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import text_message
from tests.fakes.openai_server import CallTools, FakeOpenAI, function_call_outputs
from tests.helpers import repos_of, wait_until
from tests.tools.conftest import load_sample_catalogue

PHONE = "393331112222"
ITALIAN = "Buongiorno, vorrei ordinare qualcosa dal vostro negozio"


class Turns:
    """Drives turns where the fake model calls tools, and reads back what the tools answered."""

    def __init__(self, client: TestClient, fake_openai: FakeOpenAI) -> None:
        self.client = client
        self.fake_openai = fake_openai
        self.count = 0

    async def call(self, calls: Sequence[tuple[str, Mapping[str, Any]]], text: str = ITALIAN,
                   name: str = "Giulia") -> list[Any]:
        """One customer message; the model calls `calls`, then answers. Returns the tool outputs, parsed."""
        before = len(self.fake_openai.responses_requests())
        self.fake_openai.script.append(CallTools(calls))
        self.count += 1
        wamid = f"wamid.TOOL{self.count}"
        await post_webhook(self.client, text_message(wamid, PHONE, text, name=name))
        requests = await self.fake_openai.wait_for_requests(before + 2)
        repos = repos_of(self.client)

        async def handled() -> bool:
            # The turn commits first and sends after it: wait for the reply's send too.
            if await repos.db.fetchval("SELECT status FROM inbox WHERE wamid = $1", wamid) == "pending":
                return False
            return not await repos.db.fetchval("SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending')")

        await wait_until(handled, what=f"{wamid} handled")
        outputs = function_call_outputs(requests[before + 1])
        return [orjson.loads(o) if o[:1] in "{[" else o for o in outputs.values()]


async def app_with_catalogue(make_client: ClientFactory, fake_openai: FakeOpenAI) -> tuple[TestClient, Turns]:
    client = await make_client()
    await load_sample_catalogue(repos_of(client))
    return client, Turns(client, fake_openai)


async def test_search_products(make_client: ClientFactory, fake_openai: FakeOpenAI) -> None:
    _client, turns = await app_with_catalogue(make_client, fake_openai)
    [result] = await turns.call([("search_products", {"query": "caffe", "limit": None})])
    names = [p["name"] for p in result["products"]]
    assert "Caffè Espresso 250g" in names
    espresso = next(p for p in result["products"] if p["sku"] == "CAF-ESP-250")
    assert espresso == {
        "sku": "CAF-ESP-250", "name": "Caffè Espresso 250g", "price": "6,90 €", "stock": 60, "available": True,
        "description": "Miscela 80% arabica, tostatura media, macinato per moka ed espresso.",
    }
    [empty, limited] = await turns.call([("search_products", {"query": "motocicletta", "limit": None}),
                                          ("search_products", {"query": "borsa", "limit": 1})])
    assert empty["products"] == [] and "No product" in empty["note"]
    assert len(limited["products"]) == 1 and limited["products"][0]["name"].startswith("Borsa")
    request = fake_openai.responses_requests()[0]
    spec = next(t for t in request["tools"] if t["name"] == "search_products")
    assert spec["strict"] is True and spec["parameters"]["required"] == ["query", "limit"]


async def test_create_order_and_its_problems(make_client: ClientFactory, fake_openai: FakeOpenAI) -> None:
    client, turns = await app_with_catalogue(make_client, fake_openai)
    [order] = await turns.call([("create_order", {
        "items": [{"sku": "PAN-INT-500", "quantity": 3}, {"sku": "OLI-EVO-750", "quantity": 1}],
        "notes": "consegna al mattino",
    })])
    assert order["status"] == "draft" and order["code"].startswith("ORD-")
    assert order["total"] == "22,10 €"  # 3 × 3,20 + 12,50, priced by the server
    assert [(ln["sku"], ln["quantity"], ln["line_total"]) for ln in order["lines"]] == [
        ("PAN-INT-500", 3, "9,60 €"), ("OLI-EVO-750", 1, "12,50 €"),
    ]
    repos = repos_of(client)
    row = await repos.db.fetchrow("SELECT * FROM orders WHERE id = $1", order["order_id"])
    assert row is not None and row["total_cents"] == 2210 and row["status"] == "draft"
    assert row["notes"] == "consegna al mattino"
    contact = await repos.contacts.for_conversation("100000000000001", PHONE)
    assert contact is not None and row["contact_id"] == contact.id and contact.name == "Giulia"

    [refused] = await turns.call([("create_order", {
        "items": [{"sku": "NOPE", "quantity": 1}, {"sku": "CAF-ESP-250", "quantity": 0},
                  {"sku": "CIO-FON-100", "quantity": 2}, {"sku": "PAN-NAT-1KG", "quantity": 1},
                  {"sku": "OLI-EVO-750", "quantity": 5000}],
        "notes": None,
    })])
    error = refused["error"]
    assert error.startswith("the order was not created: ")
    for expected in ("NOPE: there is no product", "at least 1", "out of stock", "no longer sold", "at most 1000"):
        assert expected in error
    assert await repos.db.fetchval("SELECT COUNT(*) FROM orders") == 1
    [invalid] = await turns.call([("create_order", {"items": [{"sku": "PAN-INT-500"}], "notes": None})])
    assert invalid == {"error": "invalid arguments: items.0.quantity: is required"}


async def test_update_contact(make_client: ClientFactory, fake_openai: FakeOpenAI) -> None:
    client, turns = await app_with_catalogue(make_client, fake_openai)
    [saved] = await turns.call([("update_contact", {
        "name": "Giulia Rossi", "email": "Giulia@Example.com", "company": None, "notes": "preferisce il ritiro",
    })])
    assert saved == {"saved": True, "contact": {
        "name": "Giulia Rossi", "email": "giulia@example.com", "company": None, "notes": "preferisce il ritiro",
    }}
    [bad, empty] = await turns.call([
        ("update_contact", {"name": None, "email": "not-an-email", "company": "x" * 101, "notes": None}),
        ("update_contact", {"name": "", "email": None, "company": None, "notes": None}),
    ])
    assert "not a valid email address" in bad["error"] and "company: at most 100" in bad["error"]
    assert "nothing to save" in empty["error"]
    # A later message with another WhatsApp profile name does not undo the name the customer gave.
    await turns.call([("search_products", {"query": "pane", "limit": 1})], name="G. R.")
    contact = await repos_of(client).contacts.for_conversation("100000000000001", PHONE)
    assert contact is not None
    assert (contact.name, contact.name_source, contact.email) == ("Giulia Rossi", "tool", "giulia@example.com")
    assert contact.language == "it"


async def test_request_human(make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph) -> None:
    client, turns = await app_with_catalogue(make_client, fake_openai)
    [result] = await turns.call([("request_human", {"reason": "vuole un reso"})])
    assert result["handed_over"] is True
    await fake_graph.wait_for_sent(1)
    conv = await repos_of(client).conversations.find(PHONE)
    assert conv is not None and conv.paused and conv.needs_human
    assert fake_graph.texts_to(PHONE) == ["Ho avvisato il nostro team: una persona ti risponderà qui al più presto."]


def _form_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, html
    return match.group(1)


async def test_confirmation_link_and_page(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client, turns = await app_with_catalogue(make_client, fake_openai)
    repos = repos_of(client)
    [order] = await turns.call([("create_order", {
        "items": [{"sku": "BOR-ROS-PEL", "quantity": 2}, {"sku": "CAF-ESP-250", "quantity": 1}], "notes": None,
    })])
    [link] = await turns.call([("generate_order_confirmation_form", {"order_id": order["order_id"]})])
    assert link["url"].startswith("http://127.0.0.1:8080/orders/confirm/")
    assert link["total"] == "184,90 €" and link["expires_in_hours"] == 24
    token = link["url"].rsplit("/", 1)[1]
    stored = await repos.db.fetchrow("SELECT * FROM order_confirmations")
    assert stored is not None and stored["token_sha256"] == token_hash(token)
    assert token not in orjson.dumps(dict(stored)).decode()  # only the hash is kept
    assert 23.9 * 3600 < stored["expires_at"] - time.time() <= 24 * 3600
    sent_before = len(fake_graph.sent)
    path = f"/orders/confirm/{token}"

    page = await client.get(path)
    html = await page.text()
    assert page.status == 200
    assert "184,90 €" in html and "Borsa Rossa in pelle" in html and order["code"] in html
    assert "Conferma l&#39;ordine" in html  # Italian, from the contact's language; escaped by autoescape
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/orders/confirm/" in cookie
    assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["Cache-Control"] == "no-store"
    csrf = _form_token(html)

    no_field = await client.post(path, data={})
    assert no_field.status == 403 and "Ricarica la pagina" in await no_field.text()
    wrong = await client.post(path, data={"csrf": "x" * 43})
    assert wrong.status == 403
    client.session.cookie_jar.clear()
    no_cookie = await client.post(path, data={"csrf": csrf})
    assert no_cookie.status == 403
    assert await repos.db.fetchval("SELECT status FROM orders WHERE id = $1", order["order_id"]) == "draft"

    page = await client.get(path)  # a fresh cookie, as a reload would give
    csrf = _form_token(await page.text())
    done = await client.post(path, data={"csrf": csrf})
    assert done.status == 200
    assert "confermato" in await done.text()
    row = await repos.db.fetchrow("SELECT status, confirmed_at FROM orders WHERE id = $1", order["order_id"])
    assert row is not None and row["status"] == "confirmed" and row["confirmed_at"] is not None
    assert await repos.db.fetchval("SELECT stock FROM products WHERE sku = 'BOR-ROS-PEL'") == 3
    await fake_graph.wait_for_sent(sent_before + 1)
    confirmation = fake_graph.texts_to(PHONE)[-1]
    assert confirmation == f"Grazie! Il tuo ordine {order['code']} è confermato. Totale: 184,90 €."

    again = await client.post(path, data={"csrf": csrf})
    assert again.status == 410 and "già stato confermato" in await again.text()
    assert (await client.get(path)).status == 410
    assert await repos.db.fetchval("SELECT COUNT(*) FROM outbox WHERE author = 'system'") == 1
    [late] = await turns.call([("generate_order_confirmation_form", {"order_id": order["order_id"]})])
    assert "already confirmed" in late["error"]


async def test_expired_unknown_and_foreign_links(make_client: ClientFactory, fake_openai: FakeOpenAI) -> None:
    client, turns = await app_with_catalogue(make_client, fake_openai)
    repos = repos_of(client)
    [order] = await turns.call([("create_order", {"items": [{"sku": "TE-VER-100", "quantity": 1}], "notes": None})])
    expired = "e" * 43
    await repos.orders.add_confirmation(order["order_id"], token_hash(expired), now=time.time() - 90000,
                                        expires_at=time.time() - 3600)
    page = await client.get(f"/orders/confirm/{expired}")
    assert page.status == 410 and "scaduto" in await page.text()
    posted = await client.post(f"/orders/confirm/{expired}", data={"csrf": "c" * 43},
                               cookies={"order_csrf": "c" * 43})
    assert posted.status == 410
    assert (await client.get(f"/orders/confirm/{'u' * 43}", headers={"Accept-Language": "en"})).status == 404
    assert (await client.get("/orders/confirm/short")).status == 404
    # Stock that ran out between the link and the click: nothing is confirmed, the customer is told.
    [big] = await turns.call([("create_order", {"items": [{"sku": "BOR-ROS-PEL", "quantity": 4}], "notes": None})])
    [link] = await turns.call([("generate_order_confirmation_form", {"order_id": big["order_id"]})])
    path = "/orders/confirm/" + link["url"].rsplit("/", 1)[1]
    csrf = _form_token(await (await client.get(path)).text())
    await repos.db.execute("UPDATE products SET stock = 1 WHERE sku = 'BOR-ROS-PEL'")
    short = await client.post(path, data={"csrf": csrf})
    text = await short.text()
    assert short.status == 409 and "non sono più disponibili" in text and "<li>Borsa Rossa in pelle</li>" in text
    assert await repos.db.fetchval("SELECT status FROM orders WHERE id = $1", big["order_id"]) == "draft"
    # Another customer's order cannot be linked from this conversation.
    other = await repos.contacts.ensure("100000000000001", "390000000001", profile_name="Other")
    foreign = await repos.orders.create_draft(other.id, [("TE-VER-100", 1)], notes=None)
    [refused] = await turns.call([("generate_order_confirmation_form", {"order_id": foreign.id})])
    assert refused == {"error": f"this customer has no order with order_id {foreign.id}"}


LEAKY_TOOL = '''
from bot.tools import ToolContext, tool


@tool
async def leaky_contact(ctx: ToolContext) -> dict[str, str]:
    """Return the customer's own number, written in several ways."""
    n = ctx.contact.wa_id or ""
    return {"plain": n, "spaced": f"+{n[:2]} {n[2:5]} {n[5:]}", "national": n[2:], "name": ctx.contact.name or ""}
'''


async def test_a_phone_number_in_a_tool_result_is_masked_before_openai(
    tmp_path: Path, make_client: ClientFactory, fake_openai: FakeOpenAI
) -> None:
    folder = tmp_path / "leaky_tools"
    folder.mkdir()
    (folder / "leaky.py").write_text(LEAKY_TOOL, encoding="utf-8")
    client = await make_client(tools_path=(str(folder),))
    [result] = await Turns(client, fake_openai).call([("leaky_contact", {})])
    assert result == {"plain": PHONE_MASK, "spaced": PHONE_MASK, "national": PHONE_MASK, "name": "Giulia"}
    traffic = fake_openai.all_traffic_text()
    assert "leaky_contact" in traffic
    assert PHONE not in traffic and PHONE[2:] not in traffic and f"{PHONE[2:5]} {PHONE[5:]}" not in traffic
