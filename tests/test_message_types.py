"""Every inbound WhatsApp type, end to end: the customer gets what AI_WHATSAPP_REPLY_MODES.md says, or nothing."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient

from bot.actors.takeover import Takeover
from bot.domain.conversation import ConversationKey
from bot.texts import TEXTS
from bot.web.keys import TAKEOVER
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import contact, inbound_message, load_sample_json, text_message, webhook
from tests.fakes.openai_server import CallTools, FakeOpenAI, Reply
from tests.helpers import reload_actors, repos_of, wait_conversation, wait_handled, wait_sent

PHONE = "393330000000"


def message(wamid: str, kind: str, content: dict[str, Any], *, sender: str = PHONE) -> dict[str, Any]:
    """One inbound message of any type from the test customer."""
    return webhook({"contacts": [contact(sender)], "messages": [inbound_message(wamid, sender, kind, content)]})


def user_texts(fake_openai: FakeOpenAI) -> list[str]:
    """The customer text of every /responses request (input items of role user)."""
    out = []
    for request in fake_openai.responses_requests():
        items = request["input"] if isinstance(request["input"], list) else []
        out += [i["content"] for i in items if i.get("role") == "user" and isinstance(i.get("content"), str)]
    return out


async def test_an_edit_in_the_burst_window_replaces_the_waiting_text(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client(burst_window_ms=500)
    await post_webhook(client, text_message("wamid.E1", PHONE, "Vorrei una borsa rosa"))
    await post_webhook(client, message("wamid.E2", "edit", {
        "original_message_id": "wamid.E1", "message": {"type": "text", "text": {"body": "Vorrei una borsa rossa"}}}))
    statuses = await wait_handled(client, 2)
    assert statuses == {"wamid.E1": "done", "wamid.E2": "done"}
    assert user_texts(fake_openai) == ["Vorrei una borsa rossa"]  # one turn, with the new text
    rows = await repos_of(client).db.fetch("SELECT type, text FROM inbox ORDER BY id")
    assert [(r["type"], r["text"]) for r in rows] == [("text", "Vorrei una borsa rosa"),
                                                       ("edit", "Vorrei una borsa rossa")]  # both versions


async def test_an_edit_of_an_answered_message_is_told_to_the_model(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await post_webhook(client, text_message("wamid.A1", PHONE, "Avete la borsa rosa?"))
    await wait_handled(client, 1)
    await post_webhook(client, message("wamid.A2", "edit", {
        "original_message_id": "wamid.A1", "message": {"type": "text", "text": {"body": "Avete la borsa rossa?"}}}))
    await wait_handled(client, 2)
    told = "[The customer edited an earlier message; it now reads:] Avete la borsa rossa?"
    assert user_texts(fake_openai)[-1] == told


async def test_a_deleted_message_is_never_answered(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client(burst_window_ms=500)
    await post_webhook(client, text_message("wamid.R1", PHONE, "Scusate, messaggio sbagliato"))
    await post_webhook(client, message("wamid.R2", "revoke", {"original_message_id": "wamid.R1"}))
    statuses = await wait_handled(client, 2)
    assert statuses == {"wamid.R1": "revoked", "wamid.R2": "ignored"}
    assert fake_openai.responses_requests() == [] and fake_graph.sent == []
    revoked = await repos_of(client).db.fetchval("SELECT revoked_at FROM inbox WHERE wamid = 'wamid.R1'")
    assert revoked is not None  # the inbox marks it deleted


async def test_a_deleted_answered_message_is_marked_and_not_answered(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await post_webhook(client, text_message("wamid.D1", PHONE, "Ciao, una domanda"))
    await wait_handled(client, 1)
    await post_webhook(client, message("wamid.D2", "revoke", {"original_message_id": "wamid.D1"}))
    await wait_handled(client, 2)
    assert len(fake_openai.responses_requests()) == 1 and len(fake_graph.sent) == 1
    row = await repos_of(client).db.fetchrow("SELECT status, revoked_at FROM inbox WHERE wamid = 'wamid.D1'")
    assert row is not None and row["status"] == "done" and row["revoked_at"] is not None
    thread = await (await client.get(f"/api/conversations/{PHONE}/messages",
                                     headers={"Authorization": f"Bearer {API_TOKEN}"})).json()
    shown = {m["id"]: m for m in thread["messages"] if m["direction"] == "in"}
    deleted = [m for m in shown.values() if m["deleted_at"] is not None]
    assert [m["text"] for m in deleted] == ["Ciao, una domanda"]  # the thread marks the original deleted


async def test_a_number_change_moves_the_conversation_and_is_never_answered(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await post_webhook(client, text_message("wamid.N1", PHONE, "Buongiorno, sono Giulia"))
    await wait_handled(client, 1)
    before = await wait_conversation(client, lambda c: True, "the conversation", PHONE)
    assert (await post_webhook(client, load_sample_json("system_changed_number"))).status == 200
    await wait_handled(client, 2)
    moved = await wait_conversation(client, lambda c: c.wa_id == "393330000009", "the move", "393330000009")
    assert moved.id == before.id and moved.session_id == before.session_id  # same conversation and session
    assert moved.customer_id == "393330000009"
    contact_row = await repos_of(client).contacts.for_conversation(moved.phone_number_id, "393330000009")
    assert contact_row is not None and contact_row.wa_id == "393330000009"
    assert len(fake_openai.responses_requests()) == 1 and len(fake_graph.sent) == 1  # the notice: no answer
    await post_webhook(client, text_message("wamid.N3", "393330000009", "Eccomi col numero nuovo"))
    await wait_handled(client, 3)
    assert fake_graph.sent[-1]["to"] == "393330000009"
    assert fake_openai.responses_requests()[-1]["safety_identifier"] == fake_openai.responses_requests()[0][
        "safety_identifier"]
    for request in fake_openai.responses_requests():  # the notice's text names both numbers: never sent
        assert "393330000009" not in str(request)


async def test_an_identity_change_is_recorded_and_flagged(client: TestClient, fake_graph: FakeGraph) -> None:
    await post_webhook(client, text_message("wamid.I1", PHONE, "Buongiorno a tutti"))
    await wait_handled(client, 1)
    await post_webhook(client, load_sample_json("system_identity_changed"))
    await wait_handled(client, 2)
    conv = await wait_conversation(client, lambda c: c.flag == "identity_changed", "the flag", PHONE)
    assert conv.flag_at is not None and len(fake_graph.sent) == 1


async def test_a_catalogue_order_becomes_a_draft_and_the_model_reads_it(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    repos = repos_of(client)
    from bot.persistence.crm import ProductInput

    await repos.products.upsert_many([ProductInput("BOR-ROS", "Borsa rossa", "in pelle", 8900, "EUR", 5, True)])
    await post_webhook(client, message("wamid.O1", "order", {
        "catalog_id": "777", "text": "Per sabato per favore",
        "product_items": [{"product_retailer_id": "BOR-ROS", "quantity": 2, "item_price": 89, "currency": "EUR"}]}))
    await wait_handled(client, 1)
    order = await repos.db.fetchrow("SELECT * FROM orders")
    assert order is not None and order["status"] == "draft" and order["total_cents"] == 17800
    assert order["notes"] == "Per sabato per favore"
    told = user_texts(fake_openai)[-1]
    assert "A draft order was made" in told and order["code"] in told and f"order_id {order['id']}" in told
    assert await repos.db.fetchval("SELECT COUNT(*) FROM events WHERE kind = 'order.created'") == 1


async def test_a_flow_reply_reaches_the_model_as_field_and_value(
    client: TestClient, fake_openai: FakeOpenAI
) -> None:
    await post_webhook(client, load_sample_json("flow_reply"))
    await wait_handled(client, 1)
    told = user_texts(fake_openai)[-1]
    assert told.startswith("[The customer filled in the form") and ": " in told.splitlines()[1]
    assert "flow_token" not in told


async def test_offered_choices_go_as_buttons_and_the_tap_comes_back(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    choices = [{"id": "pick_red", "title": "Rossa", "description": None},
               {"id": "pick_blue", "title": "Blu", "description": None}]
    fake_openai.script.append(CallTools([("offer_choices", {"text": "Quale colore?", "choices": choices})]))
    fake_openai.script.append(Reply("(ignored: the question was the answer)"))
    await post_webhook(client, text_message("wamid.C1", PHONE, "Vorrei una borsa"))
    await wait_handled(client, 1)
    sent = fake_graph.sent[-1]
    assert sent["type"] == "interactive" and sent["interactive"]["type"] == "button"
    assert [b["reply"]["id"] for b in sent["interactive"]["action"]["buttons"]] == ["pick_red", "pick_blue"]
    assert sent["interactive"]["body"]["text"] == "Quale colore?"
    rows = await wait_sent(client, 1)
    assert rows[-1]["kind"] == "choices"  # the inbox shows what was offered
    await post_webhook(client, message("wamid.C2", "interactive", {
        "type": "button_reply", "button_reply": {"id": "pick_blue", "title": "Blu"}}))
    await wait_handled(client, 2)
    assert user_texts(fake_openai)[-1] == "the customer chose Blu (pick_blue)"


async def test_a_typed_answer_to_offered_choices_is_understood(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    choices = [{"id": f"size_{s}", "title": f"Taglia {s}", "description": "disponibile"} for s in "SMLX"]
    fake_openai.script.append(CallTools([("offer_choices", {"text": "Che taglia?", "choices": choices})]))
    fake_openai.script.append(Reply("(ignored)"))
    await post_webhook(client, text_message("wamid.T1", PHONE, "Vorrei la giacca"))
    await wait_handled(client, 1)
    assert fake_graph.sent[-1]["interactive"]["type"] == "list"  # descriptions: a list, not buttons
    await post_webhook(client, text_message("wamid.T2", PHONE, "2"))
    await wait_handled(client, 2)
    assert user_texts(fake_openai)[-1] == "2 — the customer chose Taglia M (size_M)"


async def test_offered_choices_are_shown_in_the_thread_and_understood_after_a_restart(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    choices = [{"id": f"c_{n}", "title": title, "description": None} for n, title in enumerate(("Ritiro", "Consegna"))]
    fake_openai.script.append(CallTools([("offer_choices", {"text": "Come preferisci?", "choices": choices})]))
    fake_openai.script.append(Reply("(ignored)"))
    await post_webhook(client, text_message("wamid.OC1", PHONE, "Vorrei ordinare"))
    await wait_handled(client, 1)
    thread = await (await client.get(f"/api/conversations/{PHONE}/messages",
                                     headers={"Authorization": f"Bearer {API_TOKEN}"})).json()
    [offer] = [m for m in thread["messages"] if m["kind"] == "choices"]
    # As the customer saw them: reply buttons, drawn in the operator's thread from the same body.
    assert [b["reply"]["title"] for b in offer["body"]["action"]["buttons"]] == ["Ritiro", "Consegna"]
    await client.close()
    again = await make_client()  # a restart (or another process) between the offer and the answer
    await post_webhook(again, text_message("wamid.OC2", PHONE, "consegna"))
    await wait_handled(again, 2)
    assert user_texts(fake_openai)[-1] == "consegna — the customer chose Consegna (c_1)"


async def test_the_servers_own_text_after_24_hours_fails_clearly_or_goes_as_the_template(
    make_client: ClientFactory, fake_graph: FakeGraph
) -> None:
    fake_graph.add_template("avviso_generico", "it", "Avviso: {{1}}")
    for turns, (template, expect) in enumerate((("", "failed"), ("avviso_generico:it", "sent")), start=1):
        client = await make_client(window_template=template)
        customer = f"39333777{len(template):04d}"
        await post_webhook(client, text_message(f"wamid.W{len(template)}", customer, "Ciao"))
        await wait_handled(client, turns)  # the same database both times: the first run's row is there
        repos = repos_of(client)
        # A day and more later (as after a restart): the customer's last message is older than 24 hours.
        await repos.db.execute("UPDATE conversations SET last_inbound_at = $1", time.time() - 25 * 3600)
        reload_actors(client)
        key = ConversationKey("100000000000001", customer)
        async with repos.db.transaction() as tx:
            await Takeover.queue_system_text(tx, key, "Il tuo ordine ORD-1 è confermato.\nTotale: 10 €")
        before = len(fake_graph.attempts)
        client.app[TAKEOVER].wake(key)  # type: ignore[index]
        await wait_sent(client, 2 if not template else 4)
        row = await repos.db.fetchrow("SELECT * FROM outbox WHERE customer_id = $1 AND author = 'system'", customer)
        assert row is not None and row["status"] == expect, dict(row or {})
        if expect == "failed":
            assert "24 hours" in row["error_reason"] and len(fake_graph.attempts) == before  # never tried at Meta
        else:
            body = fake_graph.sent[-1]
            assert body["type"] == "template" and body["template"]["name"] == "avviso_generico"
            assert body["template"]["components"][0]["parameters"][0]["text"] == \
                "Il tuo ordine ORD-1 è confermato. Totale: 10 €"
        await client.close()


async def test_metas_location_and_contacts_without_a_type_reach_the_model_as_what_they_are(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    for n, sample in enumerate(("location_no_type", "contacts_no_type"), start=1):
        assert (await post_webhook(client, load_sample_json(sample))).status == 200
        await wait_handled(client, n)
    said = user_texts(fake_openai)
    assert len(said) == 2 and "Via Esempio 1" in said[0]  # the place, not "I can only read text"
    assert all(TEXTS["unsupported"]["it"] not in t for t in fake_graph.texts())
    assert "Echo" in fake_graph.texts()[-1]
