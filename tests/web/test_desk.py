"""The support desk's conversation routes: tabs and counts, assignment, labels, notes, read markers, the
contact panel, search, canned replies, and what every route refuses."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient

from bot.persistence.desk import TABS, ListQuery
from bot.web.keys import ACCESS
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph, GraphFailure
from tests.fakes.meta import text_message
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import repos_of, sign_in, wait_conversation, wait_handled, wait_until
from tests.tools.conftest import load_sample_catalogue
from tests.web.helpers import csrf_in, post_form

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ANNA, BRUNO, CARLA, DARIO = "393331000001", "393331000002", "393331000003", "393331000004"


async def get(client: TestClient, path: str, **params: Any) -> Any:
    resp = await client.get(path, params=params, headers=AUTH)
    assert resp.status == 200, (path, resp.status, await resp.text())
    return await resp.json()


async def names(client: TestClient, **params: Any) -> list[str]:
    return [c["name"] for c in (await get(client, "/api/conversations", **params))["conversations"]]


async def send(client: TestClient, method: str, path: str, body: Any = None, *, status: int = 200,
               headers: dict[str, str] | None = None) -> Any:
    resp = await client.request(method, path, json=body, headers=headers or AUTH)
    assert resp.status == status, (method, path, resp.status, await resp.text())
    return await resp.json()


async def four_customers(client: TestClient, fake_graph: FakeGraph) -> None:
    """Anna asks for a person, Bruno's reply fails at Meta, Carla and Dario are answered by the AI."""
    await post_webhook(client, text_message("wamid.A1", ANNA, "Vorrei parlare con un operatore", name="Anna Müller"))
    await wait_handled(client, 1)
    fake_graph.errors.append(GraphFailure.re_engagement())
    await post_webhook(client, text_message("wamid.B1", BRUNO, "Avete la borsa rossa?", name="Bruno"))
    await wait_handled(client, 2)
    await post_webhook(client, text_message("wamid.C1", CARLA, "Perché il pane integrale costa così?", name="Carla"))
    await post_webhook(client, text_message("wamid.D1", DARIO, "Buongiorno", name="Dario"))
    await wait_handled(client, 4)


async def test_tabs_counts_and_the_plan_of_every_filter(client: TestClient, fake_graph: FakeGraph) -> None:
    await four_customers(client, fake_graph)
    await client.post("/api/test-chat/messages", json={"text": "prova"}, headers=AUTH)
    await wait_handled(client, 5)
    await send(client, "POST", f"/api/conversations/{CARLA}/pause")
    await wait_conversation(client, lambda c: c.paused, "Carla paused", CARLA)
    await send(client, "POST", f"/api/conversations/{DARIO}/assign", {"username": "admin"})

    assert sorted(await names(client)) == ["Anna Müller", "Bruno", "Carla", "Dario"]  # no test chat
    assert await names(client, tab="needs_human") == ["Anna Müller"]
    assert await names(client, tab="paused") == ["Carla"]
    assert await names(client, tab="failed") == ["Bruno"]
    assert sorted(await names(client, tab="unassigned")) == ["Anna Müller", "Bruno", "Carla"]
    assert await names(client, tab="test") == ["Test chat (BOT_API_TOKEN)"]
    # "mine" is the caller's: the token's user holds nothing, admin holds Dario.
    assert await names(client, tab="mine") == []
    await sign_in(client)
    mine = await (await client.get("/api/conversations", params={"tab": "mine"})).json()
    assert [c["name"] for c in mine["conversations"]] == ["Dario"]
    listed = (await get(client, "/api/conversations"))["conversations"]
    assert listed[0]["name"] == "Anna Müller"  # needs human first
    assert all(c["unread"] == 1 and c["last_activity_at"] for c in listed)
    counts = (await (await client.get("/api/conversations/counts")).json())["counts"]
    assert counts == {"needs_human": 1, "paused": 1, "failed": 1, "mine": 1, "unassigned": 3, "all": 4}
    bad = await client.get("/api/conversations", params={"tab": "everything"}, headers=AUTH)
    assert bad.status == 400 and "needs_human" in (await bad.json())["error"]

    # Each tab's first page is read through an index in list order: no sort of the whole table. The
    # plans are SQLite's (on PostgreSQL, a table this small is read whole, rightly).
    repos = repos_of(client)
    if repos.db.dialect != "sqlite":
        return
    indexes = {"all": "conversations_desk", "needs_human": "conversations_paused", "test": "conversations_desk",
               "paused": "conversations_paused", "mine": "conversations_assigned",
               "unassigned": "conversations_assigned", "failed": "conversations_desk"}
    for tab in TABS:
        built = repos.desk.page_sql(ListQuery(tab=tab, user="admin"), time.time())
        assert built is not None
        plan = " | ".join(str(tuple(r)) for r in await repos.db.fetch("EXPLAIN QUERY PLAN " + built[0], *built[1]))
        assert indexes[tab] in plan, (tab, plan)
        assert "TEMP B-TREE FOR ORDER BY" not in plan, (tab, plan)
    # A label and a search walk the same index, with their matches looked up by id: no table is read whole.
    label = await repos.labels.ensure("VIP")
    for query, uses in ((ListQuery(label_id=label.id), "conversation_labels_label"),
                        (ListQuery(text="muller"), "contacts_fts VIRTUAL TABLE"),
                        (ListQuery(text="3331000"), "COVERING INDEX conversations_wa_id")):
        built = repos.desk.page_sql(query, time.time())
        assert built is not None
        steps = [str(r[3]) for r in await repos.db.fetch("EXPLAIN QUERY PLAN " + built[0], *built[1])]
        assert any(uses in step for step in steps), (query, steps)
        assert "SEARCH c USING INDEX conversations_desk (is_test=?)" in steps, (query, steps)
        whole = [s for s in steps if s.startswith("SCAN ") and " USING " not in s and "VIRTUAL TABLE" not in s
                 and s.split()[1] not in ("h", "u")]
        assert whole == [], (query, whole)


async def test_taking_assigning_and_handing_back(client: TestClient, fake_graph: FakeGraph) -> None:
    await four_customers(client, fake_graph)
    await client.app[ACCESS].add_user("maria", "operator", "a-long-operator-password")
    csrf = await sign_in(client)
    session = {"X-CSRF-Token": csrf}
    taken = await send(client, "POST", f"/api/conversations/{DARIO}/take", headers=session)
    assert taken["assigned_to"] == "admin"
    await wait_conversation(client, lambda c: c.paused and c.paused_until is None, "Dario held", DARIO)
    thread = await get(client, f"/api/conversations/{DARIO}/messages")
    assert thread["conversation"]["assigned_to"] == "admin" and thread["conversation"]["state"] == "paused"
    # The needs-human queue shows who holds what.
    await send(client, "POST", f"/api/conversations/{ANNA}/assign", {"username": "MARIA"})
    queue = (await get(client, "/api/conversations", tab="needs_human"))["conversations"]
    assert [(c["name"], c["assigned_to"], c["state"]) for c in queue] == [("Anna Müller", "maria", "needs_human")]
    for body, message in (({"username": "nobody"}, "there is no user 'nobody'"), ({}, "username"),
                          ({"username": 5}, "there is no user")):
        refused = await send(client, "POST", f"/api/conversations/{ANNA}/assign", body, status=400)
        assert message in refused["error"]
    # Handing back lets the conversation go and gives it back to the AI.
    handed = await send(client, "POST", f"/api/conversations/{DARIO}/resume", headers=session)
    assert handed == {"state": "ai", "assigned_to": None}
    await wait_conversation(client, lambda c: not c.paused, "Dario back with the AI", DARIO)
    assert (await repos_of(client).conversations.find(DARIO)).assigned_to is None  # type: ignore[union-attr]
    released = await send(client, "POST", f"/api/conversations/{ANNA}/assign", {"username": None})
    assert released == {"assigned_to": None}
    await post_webhook(client, text_message("wamid.D2", DARIO, "Grazie!", name="Dario"))
    await wait_handled(client, 5)
    assert fake_graph.texts_to(DARIO)[-1] == "Echo: Grazie!"  # the AI answers again


async def test_labels_notes_and_unread(client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph) -> None:
    await four_customers(client, fake_graph)
    made = await send(client, "POST", f"/api/conversations/{CARLA}/labels", {"name": " Reso  urgente ",
                                                                              "color": "#E53935"}, status=201)
    assert made["labels"] == [{"id": made["labels"][0]["id"], "name": "Reso urgente", "color": "#e53935"}]
    label_id = made["labels"][0]["id"]
    again = await send(client, "POST", f"/api/conversations/{DARIO}/labels", {"name": "RESO URGENTE"}, status=201)
    assert [lb["id"] for lb in again["labels"]] == [label_id]  # one label, whatever the case
    await send(client, "POST", f"/api/conversations/{DARIO}/labels", {"id": label_id}, status=201)  # again: fine
    assert sorted(await names(client, label=str(label_id))) == ["Carla", "Dario"]
    assert sorted(await names(client, label=str(label_id), tab="needs_human")) == []
    listed = (await get(client, "/api/labels"))["labels"]
    assert listed == [{"id": label_id, "name": "Reso urgente", "color": "#e53935", "conversations": 2}]
    for body, status in (({"name": ""}, 400), ({"name": "x" * 41}, 400), ({"name": "ok", "color": "red"}, 400),
                         ({"id": 999}, 404), ({"id": "1"}, 404)):
        await send(client, "POST", f"/api/conversations/{CARLA}/labels", body, status=status)
    await send(client, "DELETE", f"/api/conversations/{DARIO}/labels/{label_id}")
    await send(client, "DELETE", f"/api/conversations/{DARIO}/labels/{label_id}", status=404)
    assert await names(client, label=str(label_id)) == ["Carla"]
    assert (await client.get("/api/conversations", params={"label": "vip"}, headers=AUTH)).status == 400
    coloured = await send(client, "POST", "/api/labels", {"name": "reso urgente", "color": "#43A047"}, status=201)
    assert coloured == {"id": label_id, "name": "Reso urgente", "color": "#43a047"}  # the same label, recoloured
    for body in ({"name": "  "}, {"color": "#43a047"}, {"name": "VIP", "color": "#43a04"}):
        await send(client, "POST", "/api/labels", body, status=400)

    # A private note stays in the thread: never sent, never shown to the model.
    note = await send(client, "POST", f"/api/conversations/{CARLA}/notes", {"text": "Cliente storica, sconto 10%"},
                      status=201)
    assert note["author"] == "BOT_API_TOKEN" and note["text"] == "Cliente storica, sconto 10%"
    for body in ({"text": "  "}, {"text": 3}, {"text": "x" * 4001}):
        await send(client, "POST", f"/api/conversations/{CARLA}/notes", body, status=400)
    thread = await get(client, f"/api/conversations/{CARLA}/messages")
    assert [n["text"] for n in thread["notes"]] == ["Cliente storica, sconto 10%"]
    assert [n["author"] for n in (await get(client, f"/api/conversations/{CARLA}/notes"))["notes"]] == [
        "BOT_API_TOKEN"]
    assert all("sconto" not in (m["text"] or "") for m in thread["messages"])
    await post_webhook(client, text_message("wamid.C2", CARLA, "Ci sono novità?", name="Carla"))
    await wait_handled(client, 5)
    assert not any("sconto" in str(m) for m in fake_graph.sent)
    assert not any("sconto" in str(r) for r in fake_openai.responses_requests())
    assert not await repos_of(client).db.fetchval("SELECT COUNT(*) FROM outbox WHERE text LIKE '%sconto%'")

    # Unread: customer messages since an operator last opened the conversation.
    def unread(rows: list[dict[str, Any]]) -> int:
        return next(c["unread"] for c in rows if c["name"] == "Carla")

    assert unread((await get(client, "/api/conversations"))["conversations"]) == 2
    first = next(m["id"] for m in thread["messages"] if m["direction"] == "in")
    assert (await send(client, "POST", f"/api/conversations/{CARLA}/read", {"up_to": first}))["last_read"] > 0
    assert unread((await get(client, "/api/conversations"))["conversations"]) == 1
    await send(client, "POST", f"/api/conversations/{CARLA}/read")
    assert unread((await get(client, "/api/conversations"))["conversations"]) == 0
    await send(client, "POST", f"/api/conversations/{CARLA}/read", {"up_to": first})  # never backwards
    assert unread((await get(client, "/api/conversations"))["conversations"]) == 0
    await send(client, "POST", f"/api/conversations/{CARLA}/read", {"up_to": "nope"}, status=400)


async def test_contact_panel_orders_and_other_numbers(client: TestClient, fake_openai: FakeOpenAI,
                                                      fake_graph: FakeGraph) -> None:
    # The same person also wrote to the business's other number, earlier.
    await post_webhook(client, text_message("wamid.P2", ANNA, "Ciao dal negozio 2", name="anna82",
                                            phone_number_id="100000000000002"))
    await wait_handled(client, 1)
    await post_webhook(client, text_message("wamid.P1", ANNA, "Ciao", name="anna82"))
    await wait_handled(client, 2)
    repos = repos_of(client)
    await load_sample_catalogue(repos)
    contact = await repos.contacts.for_conversation("100000000000001", ANNA)
    assert contact is not None
    order = await repos.orders.create_draft(contact.id, [("CAF-ESP-250", 2)], notes=None)
    panel = await get(client, f"/api/conversations/{ANNA}/contact")
    assert panel["contact"]["name"] == "anna82" and panel["contact"]["name_source"] == "whatsapp"
    assert [(o["code"], o["status"], o["total_cents"]) for o in panel["orders"]] == [
        (order.code, "draft", order.total_cents)]
    assert [c["phone_number_id"] for c in panel["conversations"]] == ["100000000000002"]
    # {wa_id} names the most recent conversation; <phone_number_id>:<customer_id> names one exactly.
    other = await get(client, f"/api/conversations/100000000000002:{ANNA}/contact")
    assert other["orders"] == [] and [c["phone_number_id"] for c in other["conversations"]] == ["100000000000001"]
    assert (await client.get(f"/api/conversations/100000000000009:{ANNA}/contact", headers=AUTH)).status == 404

    edited = await send(client, "PUT", f"/api/conversations/{ANNA}/contact", {
        "name": "Anna Bianchi", "email": "anna@example.com", "company": "Bottega Bianchi", "language": "it",
        "notes": "Preferisce essere chiamata al mattino"})
    assert edited["contact"] | {"id": 0} == {"id": 0, "name": "Anna Bianchi", "name_source": "operator",
                                             "email": "anna@example.com", "company": "Bottega Bianchi",
                                             "language": "it", "notes": "Preferisce essere chiamata al mattino",
                                             "wa_id": ANNA}
    # WhatsApp's profile name no longer replaces it.
    await post_webhook(client, text_message("wamid.P3", ANNA, "Sono ancora io", name="anna82"))
    await wait_handled(client, 3)
    assert (await repos.contacts.get(contact.id)).name == "Anna Bianchi"  # type: ignore[union-attr]
    assert "Anna Bianchi" in await names(client)
    for body, message in (({"email": "not-an-address"}, "not an email"), ({"name": ""}, "cannot be empty"),
                          ({"phone": "1"}, "unknown field"), ({"language": "Italiano!"}, "language code"),
                          ({"notes": 5}, "must be text"), ({"company": "x" * 201}, "at most 200")):
        refused = await send(client, "PUT", f"/api/conversations/{ANNA}/contact", body, status=400)
        assert message in refused["error"], body


async def test_search_ignores_accents_and_case_and_finds_message_words(client: TestClient,
                                                                     fake_graph: FakeGraph) -> None:
    await four_customers(client, fake_graph)
    assert await names(client, q="mueller") == ["Anna Müller"]
    assert await names(client, q="MÜLLER") == ["Anna Müller"]
    assert await names(client, q="perche integrale") == ["Carla"]  # words of a message, without the accent
    assert await names(client, q="borsa") == ["Bruno"]
    assert await names(client, q="333 100 0004") == ["Dario"]  # part of a number, typed with spaces
    assert await names(client, q="zanzibar") == []
    assert await names(client, q="%%") == []  # punctuation alone finds nothing
    assert await names(client, q="borsa", tab="needs_human") == []


async def test_canned_replies_on_the_settings_page_fill_their_variables(client: TestClient,
                                                                       fake_graph: FakeGraph) -> None:
    await post_webhook(client, text_message("wamid.K1", ANNA, "Ciao", name="Anna"))
    await wait_handled(client, 1)
    csrf = await sign_in(client)
    resp = await post_form(client, "/settings/canned", csrf, shortcut="/Grazie",
                           text="Grazie {{name}}! Il tuo ordine {{order_code}} parte oggi. {{ firma }}")
    assert resp.status == 303 and resp.headers["Location"].endswith("#canned")
    for shortcut, text, message in (("no spaces", "x", "A shortcut has"), ("ok", "   ", "Write the reply"),
                                    ("grazie", "dup", "already a canned reply called /grazie")):
        page = await post_form(client, "/settings/canned", csrf, shortcut=shortcut, text=text)
        assert page.status == 400 and message in await page.text()
    listed = await get(client, "/api/canned-replies", conversation=ANNA)
    reply = listed["canned_replies"][0]
    # No order yet: {{order_code}} stays visible, as does the unknown {{ firma }}.
    assert reply["filled"] == "Grazie Anna! Il tuo ordine {{order_code}} parte oggi. {{ firma }}"
    repos = repos_of(client)
    await load_sample_catalogue(repos)
    contact = await repos.contacts.for_conversation("100000000000001", ANNA)
    order = await repos.orders.create_draft(contact.id, [("CAF-ESP-250", 1)], notes=None)  # type: ignore[union-attr]
    reply = (await get(client, "/api/canned-replies", conversation=ANNA))["canned_replies"][0]
    assert reply["filled"] == f"Grazie Anna! Il tuo ordine {order.code} parte oggi. {{{{ firma }}}}"
    assert (await client.get("/api/canned-replies", params={"conversation": "nobody"}, headers=AUTH)).status == 404
    page = await (await client.get("/settings")).text()
    edit = csrf_in(page)
    resp = await post_form(client, "/settings/canned", edit, id=reply["id"], shortcut="grazie2", text="Grazie!")
    assert resp.status == 303
    assert [r["shortcut"] for r in (await get(client, "/api/canned-replies"))["canned_replies"]] == ["grazie2"]
    resp = await post_form(client, f"/settings/canned/{reply['id']}/delete", csrf)
    assert resp.status == 303 and (await get(client, "/api/canned-replies"))["canned_replies"] == []


async def test_every_desk_route_wants_a_conversation_and_a_csrf_token(make_client: ClientFactory,
                                                                       fake_graph: FakeGraph) -> None:
    client = await make_client(autoreply=False)
    await post_webhook(client, text_message("wamid.R1", ANNA, "Ciao", name="Anna"))
    await wait_until(lambda: repos_of(client).conversations.find(ANNA), what="the conversation")
    writes = [("POST", "take", None), ("POST", "assign", {"username": None}), ("POST", "read", None),
              ("POST", "labels", {"name": "x"}), ("DELETE", "labels/1", None), ("POST", "notes", {"text": "x"}),
              ("PUT", "contact", {"company": "x"}), ("POST", "template", {"name": "x", "language": "it"})]
    for method, suffix, body in writes:
        resp = await client.request(method, f"/api/conversations/nobody/{suffix}", json=body, headers=AUTH)
        assert resp.status == 404 and "no conversation" in (await resp.json())["error"], (method, suffix)
    for suffix in ("contact", "notes", "export", "messages"):
        assert (await client.get(f"/api/conversations/nobody/{suffix}", headers=AUTH)).status == 404, suffix
    for method, suffix, body in writes:
        if body is None:
            continue
        resp = await client.request(method, f"/api/conversations/{ANNA}/{suffix}", data=b"not json",
                                    headers=AUTH)
        assert resp.status == 400 and "send JSON like" in (await resp.json())["error"], (method, suffix)
    # Signed in with a session, every write needs the page's CSRF token in X-CSRF-Token.
    await sign_in(client)
    for method, suffix, body in writes:
        resp = await client.request(method, f"/api/conversations/{ANNA}/{suffix}", json=body)
        assert resp.status == 403, (method, suffix, resp.status)
    resp = await client.post("/api/labels", json={"name": "x"})
    assert resp.status == 403
    assert (await repos_of(client).labels.all()) == []
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM notes") == 0
