"""Templates in the desk: synced from the fake Graph API at start, sent after the 24-hour window with Meta-like
refusals, status webhooks applied, syncing on demand; and the interactive messages the thread shows."""

from __future__ import annotations

import time
from typing import Any

from bot.actors.conversation import Wake
from bot.domain.conversation import ConversationKey, OutboundMessage
from bot.web.keys import ACCESS, REGISTRY
from bot.whatsapp.interactive import render_choices
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import PHONE_NUMBER_ID, WABA_ID, load_sample_json, text_message
from tests.helpers import repos_of, sign_in, wait_conversation, wait_handled, wait_until
from tests.web.helpers import post_form

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
GIULIA = "393332000001"


def catalogue(fake_graph: FakeGraph) -> None:
    fake_graph.waba_id = WABA_ID
    fake_graph.add_template("order_ready", "it", "Ciao {{1}}, il tuo ordine {{2}} è pronto.", footer="Bottega Test",
                            buttons=[{"type": "QUICK_REPLY", "text": "Grazie"}])
    # The second one added has the id the rejection sample names.
    fake_graph.add_template("spring_promo", "en_US", "Spring sale!", category="MARKETING")
    fake_graph.add_template("welcome", "en_US", "Hi {{first_name}}!", status="PENDING", category="MARKETING")


async def test_after_the_window_only_approved_templates_go_out(make_client: ClientFactory,
                                                                fake_graph: FakeGraph) -> None:
    catalogue(fake_graph)
    client = await make_client(whatsapp_business_account_id=WABA_ID)
    stale = int(time.time() - 25 * 3600)
    await post_webhook(client, text_message("wamid.T1", GIULIA, "Ciao", name="Giulia", timestamp=str(stale)))
    await wait_handled(client, 1)

    async def synced() -> list[dict[str, Any]]:
        listing = await (await client.get("/api/templates", headers=AUTH)).json()
        return list(listing["templates"]) if len(listing["templates"]) == 3 else []

    templates = {t["name"]: t for t in await wait_until(synced, what="the start-up sync")}
    assert templates["order_ready"] | {"reason": None} == {
        "name": "order_ready", "language": "it", "category": "UTILITY", "status": "APPROVED", "reason": None,
        "parameters": ["1", "2"], "parameter_count": 2, "header": None,
        "body": "Ciao {{1}}, il tuo ordine {{2}} è pronto.", "footer": "Bottega Test", "buttons": ["Grazie"]}
    assert templates["welcome"]["parameters"] == ["first_name"] and templates["welcome"]["status"] == "PENDING"

    thread = await (await client.get(f"/api/conversations/{GIULIA}/messages", headers=AUTH)).json()
    assert thread["conversation"]["window_open"] is False
    assert abs(thread["conversation"]["window_closes_at"] - (stale + 24 * 3600)) < 1
    refused = await client.post(f"/api/conversations/{GIULIA}/messages", json={"text": "Ciao!"}, headers=AUTH)
    assert refused.status == 409 and "/template" in (await refused.json())["error"]

    path = f"/api/conversations/{GIULIA}/template"
    for body, reason, words in (
        ({"name": "nope", "language": "it"}, "unknown_template", "unknown template 'nope'"),
        ({"name": "welcome", "language": "en_US", "parameters": ["Giulia"]}, "not_approved", "is PENDING"),
        ({"name": "order_ready", "language": "it", "parameters": ["Giulia"]}, "parameter_count", "takes 2 parameters"),
        ({"name": "order_ready", "language": "it", "parameters": ["Giulia", "A\nB"]}, "invalid_parameter", "newline"),
        ({"name": "order_ready", "language": "it", "parameters": "Giulia"}, None, "list of texts"),
        ({"language": "it"}, None, '"name" and "language" are required'),
    ):
        resp = await client.post(path, json=body, headers=AUTH)
        answer = await resp.json()
        assert resp.status == 400 and words in answer["error"] and answer.get("reason") == reason, (body, answer)
    assert fake_graph.templates_sent() == []

    sent = await client.post(path, json={"name": "order_ready", "language": "it",
                                         "parameters": ["Giulia", "ORD-7K3Q9X"]}, headers=AUTH)
    assert sent.status == 202
    accepted = await sent.json()
    assert accepted["status"] == "queued"
    assert accepted["preview"] == "Ciao Giulia, il tuo ordine ORD-7K3Q9X è pronto.\n\nBottega Test"
    await fake_graph.wait_until(lambda: bool(fake_graph.templates_sent()), what="the template send")
    template = fake_graph.templates_sent()[0]
    assert template["name"] == "order_ready" and template["language"] == {"code": "it"}
    assert [p["text"] for p in template["components"][0]["parameters"]] == ["Giulia", "ORD-7K3Q9X"]
    await wait_conversation(client, lambda c: c.paused, "the AI paused by the template", GIULIA)
    thread = await (await client.get(f"/api/conversations/{GIULIA}/messages", headers=AUTH)).json()
    shown = [m for m in thread["messages"] if m["kind"] == "template"]
    assert [(m["author"], m["text"], m["body"]["name"]) for m in shown] == [
        ("operator", accepted["preview"], "order_ready")]

    # Meta's review results arrive by webhook between syncs.
    assert (await post_webhook(client, load_sample_json("template_status_rejected"))).status == 200
    listing = await (await client.get("/api/templates", headers=AUTH)).json()
    promo = next(t for t in listing["templates"] if t["name"] == "spring_promo")
    assert (promo["status"], promo["reason"]) == ("REJECTED", "INCORRECT_CATEGORY")

    # Syncing on demand is for admins; the set is replaced whole.
    fake_graph.templates = [t for t in fake_graph.templates if t["name"] != "welcome"]
    await client.app[ACCESS].add_user("maria", "operator", "a-long-operator-password")
    await sign_in(client, "maria", "a-long-operator-password")
    assert (await client.post("/api/templates/sync")).status == 403
    resynced = await client.post("/api/templates/sync", headers=AUTH)
    assert resynced.status == 200 and (await resynced.json())["count"] == 2


async def test_without_a_waba_the_settings_page_says_what_to_set(make_client: ClientFactory,
                                                                   fake_graph: FakeGraph) -> None:
    client = await make_client()
    resp = await client.post("/api/templates/sync", headers=AUTH)
    assert resp.status == 400 and "WHATSAPP_BUSINESS_ACCOUNT_ID is not set" in (await resp.json())["error"]
    listing = await (await client.get("/api/templates", headers=AUTH)).json()
    assert listing["templates"] == [] and "WHATSAPP_BUSINESS_ACCOUNT_ID" in listing["problem"]
    csrf = await sign_in(client)
    page = await (await client.get("/settings")).text()
    assert "WHATSAPP_BUSINESS_ACCOUNT_ID is not set" in page and 'id="templates-sync"' in page
    pressed = await post_form(client, "/settings/templates/sync", csrf)
    assert pressed.status == 400 and "WHATSAPP_BUSINESS_ACCOUNT_ID is not set" in await pressed.text()


async def test_the_thread_shows_the_buttons_and_the_list_that_were_offered(make_client: ClientFactory,
                                                                            fake_graph: FakeGraph) -> None:
    client = await make_client()
    await post_webhook(client, text_message("wamid.I1", GIULIA, "Che caffè avete?", name="Giulia"))
    await wait_handled(client, 1)
    buttons = render_choices("Quale preferisci?", [{"id": "esp", "title": "Espresso"}, {"id": "moka", "title": "Moka"}])
    rows = render_choices("Scegli la macinatura", [{"id": str(i), "title": f"Macinatura {i}",
                                                    "description": "per moka" if i == 1 else None}
                                                   for i in range(1, 6)], language="it")
    assert (buttons.kind, rows.kind) == ("button", "list")
    key = ConversationKey(PHONE_NUMBER_ID, GIULIA)
    await repos_of(client).outbox.enqueue(key, [OutboundMessage("interactive", buttons.text, buttons.interactive),
                                                OutboundMessage("interactive", rows.text, rows.interactive)],
                                          author="ai")
    client.app[REGISTRY].tell(key, Wake())  # as the actor would after a turn: it sends them
    await fake_graph.wait_until(lambda: len(fake_graph.interactives()) == 2, what="the two interactive sends")

    async def offered_once_sent() -> list[dict[str, Any]] | None:  # the ack is stored just after Graph answers
        thread = await (await client.get(f"/api/conversations/{GIULIA}/messages", headers=AUTH)).json()
        offered = [m for m in thread["messages"] if m["kind"] == "interactive"]
        return offered if all(m["status"] != "queued" and m["status"] != "sending" for m in offered) else None

    offered = await wait_until(offered_once_sent, what="both sends acknowledged")
    assert [m["body"]["type"] for m in offered] == ["button", "list"]
    assert [b["reply"]["title"] for b in offered[0]["body"]["action"]["buttons"]] == ["Espresso", "Moka"]
    assert offered[1]["body"]["action"]["sections"][0]["rows"][0]["description"] == "per moka"
    assert all(m["status"] == "sent" for m in offered)
