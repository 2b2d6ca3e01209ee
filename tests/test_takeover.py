"""Human takeover, auto-reply off, reactions, read receipts, hand-off, delivery failures."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import load_sample, text_message
from tests.fakes.openai_server import CallTools, FakeOpenAI, Reply
from tests.helpers import repos_of, wait_conversation, wait_handled, wait_until

PHONE = "393330000000"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def echo(wamid: str, text: str, kind: str = "text") -> dict[str, Any]:
    """An smb_message_echoes webhook: the business answered from the WhatsApp Business app."""
    message: dict[str, Any] = {"from": "15550001234", "to": PHONE, "id": wamid, "timestamp": str(int(time.time())),
                               "type": kind}
    if kind == "text":
        message["text"] = {"body": text}
    elif kind == "revoke":
        message["revoke"] = {"original_message_id": "wamid.X"}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "smb_message_echoes", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": "100000000000001"},
            "message_echoes": [message]}}]}],
    }


async def start_conversation(client: TestClient, fake_graph: FakeGraph, n: int = 1) -> None:
    """One answered customer message, so the conversation exists."""
    await post_webhook(client, text_message("wamid.START", PHONE, "Buongiorno, avete la borsa rossa?"))
    await fake_graph.wait_for_sent(n)


async def test_operator_message_is_sent_and_pauses_the_ai(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await start_conversation(client, fake_graph)
    resp = await client.post(f"/api/conversations/{PHONE}/messages", json={"text": "Ciao, sono Marco"},
                             headers=AUTH)
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["status"] == "queued"  # answered at once; the actor sends it
    await fake_graph.wait_for_sent(2)
    assert fake_graph.texts()[-1] == "Ciao, sono Marco"
    await post_webhook(client, text_message("wamid.DURING", PHONE, "Grazie Marco, quanto costa?"))
    await wait_handled(client, 2)
    assert len(fake_openai.responses_requests()) == 1  # no model call during the pause
    assert fake_graph.texts()[-1] == "Ciao, sono Marco"
    messages = await (await client.get(f"/api/conversations/{PHONE}/messages", headers=AUTH)).json()
    authors = [(m["author"], m["text"]) for m in messages["messages"]]
    assert ("operator", "Ciao, sono Marco") in authors
    assert ("customer", "Grazie Marco, quanto costa?") in authors


async def test_resume_gives_the_model_what_was_said_meanwhile(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await start_conversation(client, fake_graph)
    await client.post(f"/api/conversations/{PHONE}/messages", json={"text": "La borsa costa 89 euro"}, headers=AUTH)
    await post_webhook(client, text_message("wamid.P1", PHONE, "Perfetto, la prendo in rosso"))
    await wait_handled(client, 2)
    assert (await client.post(f"/api/conversations/{PHONE}/resume", headers=AUTH)).status == 200
    await post_webhook(client, text_message("wamid.P2", PHONE, "Quando arriva?"))
    await fake_graph.wait_for_sent(3)
    last = fake_openai.responses_requests()[-1]
    assert "La borsa costa 89 euro" in last["instructions"]
    assert "Perfetto, la prendo in rosso" in last["instructions"]
    assert fake_graph.texts()[-1] == "Echo: Quando arriva?"
    # The context is given once; the turn after that is a plain turn.
    await post_webhook(client, text_message("wamid.P3", PHONE, "Grazie mille"))
    await fake_graph.wait_for_sent(4)
    assert "89 euro" not in fake_openai.responses_requests()[-1]["instructions"]


async def test_cooldown_resumes_by_itself(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client(human_cooldown_seconds=1)
    await start_conversation(client, fake_graph)
    await client.post(f"/api/conversations/{PHONE}/messages", json={"text": "Ci penso io"}, headers=AUTH)
    conv = await wait_conversation(client, lambda c: c.paused_until is not None, "the pause")
    assert 0 < conv.paused_until - time.time() <= 1.5
    await post_webhook(client, text_message("wamid.CD1", PHONE, "ok grazie, aspetto"))
    await wait_handled(client, 2)
    assert len(fake_openai.responses_requests()) == 1

    async def expired() -> bool:
        c = await repos_of(client).conversations.find(PHONE)
        return c is not None and not c.is_paused(time.time())

    await wait_until(expired, timeout=5, what="cooldown to expire")
    await post_webhook(client, text_message("wamid.CD2", PHONE, "ci siete ancora?"))
    await fake_graph.wait_for_sent(3)
    assert fake_graph.texts()[-1] == "Echo: ci siete ancora?"


async def test_business_app_echoes_pause_the_ai(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await start_conversation(client, fake_graph)
    for _ in range(2):  # a repeated echo is stored once
        assert (await post_webhook(client, echo("wamid.ECHO1", "Rispondo io dal negozio"))).status == 200
    await post_webhook(client, text_message("wamid.AFTER", PHONE, "Ah perfetto, grazie"))
    await wait_handled(client, 2)
    assert len(fake_openai.responses_requests()) == 1
    count = await repos_of(client).db.fetchval("SELECT COUNT(*) FROM outbox WHERE author = 'operator'")
    assert count == 1


async def test_revoke_and_edit_echoes_count_as_human_activity(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await start_conversation(client, fake_graph)
    await post_webhook(client, load_sample("smb_echo_edit"))
    await wait_conversation(client, lambda c: c.paused, "the pause after an edit")
    await client.post(f"/api/conversations/{PHONE}/resume", headers=AUTH)
    await wait_conversation(client, lambda c: not c.paused, "the hand-back")
    await post_webhook(client, echo("wamid.REV", "", kind="revoke"))
    await wait_conversation(client, lambda c: c.paused, "the pause after a deletion")


async def test_operator_steps_in_while_the_model_is_thinking(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await start_conversation(client, fake_graph)
    chain_before = await repos_of(client).db.fetchval("SELECT last_response_id FROM conversations")
    fake_openai.latency = 0.5
    await post_webhook(client, text_message("wamid.RACE", PHONE, "Posso pagare alla consegna?"))
    await fake_openai.wait_for_requests(2)
    resp = await client.post(f"/api/conversations/{PHONE}/messages", json={"text": "Sì, certo!"}, headers=AUTH)
    assert resp.status == 202
    statuses = await wait_handled(client, 2)
    assert statuses["wamid.RACE"] == "ignored"
    await fake_graph.wait_for_sent(2)
    assert fake_graph.texts()[-1] == "Sì, certo!"
    assert "Echo: Posso pagare alla consegna?" not in fake_graph.texts()
    # The dropped draft's response id is not kept.
    assert await repos_of(client).db.fetchval("SELECT last_response_id FROM conversations") == chain_before


async def test_pause_endpoint_and_unknown_conversation(client: TestClient, fake_openai: FakeOpenAI,
                                                       fake_graph: FakeGraph) -> None:
    await start_conversation(client, fake_graph)
    assert (await client.post(f"/api/conversations/{PHONE}/pause", headers=AUTH)).status == 200
    await post_webhook(client, text_message("wamid.PZ", PHONE, "c'è qualcuno?"))
    await wait_handled(client, 2)
    assert len(fake_openai.responses_requests()) == 1
    assert (await client.post("/api/conversations/000/pause", headers=AUTH)).status == 404
    bad = await client.post(f"/api/conversations/{PHONE}/messages", data=b"nope", headers=AUTH)
    assert bad.status == 400
    empty = await client.post(f"/api/conversations/{PHONE}/messages", json={"text": "  "}, headers=AUTH)
    assert empty.status == 400


async def test_operator_message_outside_24h_window_gets_409(client: TestClient, fake_graph: FakeGraph) -> None:
    await start_conversation(client, fake_graph)
    await repos_of(client).db.execute("UPDATE conversations SET last_inbound_at = $1", time.time() - 25 * 3600)
    resp = await client.post(f"/api/conversations/{PHONE}/messages", json={"text": "Ciao!"}, headers=AUTH)
    assert resp.status == 409
    assert "24 hours" in (await resp.json())["error"]
    assert fake_graph.texts() == ["Echo: Buongiorno, avete la borsa rossa?"]


async def test_autoreply_off_stores_and_sends_nothing(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client(autoreply=False)
    await post_webhook(client, text_message("wamid.AR", PHONE, "Buongiorno"))
    assert await wait_handled(client, 1) == {"wamid.AR": "ignored"}
    assert fake_openai.responses_requests() == []
    assert fake_graph.sent == [] and fake_graph.read_marks == []
    # The customer still becomes a CRM contact, named from their WhatsApp profile.
    assert await repos_of(client).db.fetchval("SELECT name FROM contacts") == "Test User"


async def test_reaction_and_read_receipt_around_the_turn(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client(reaction=True, reaction_emoji="⏳")
    await post_webhook(client, text_message("wamid.RX", PHONE, "Buongiorno"))
    await wait_handled(client, 1)
    await fake_graph.wait_for_sent(3)
    kinds = [(m["type"], m.get("reaction", {}).get("emoji")) for m in fake_graph.sent]
    assert kinds == [("reaction", "⏳"), ("text", None), ("reaction", "")]
    assert fake_graph.read_marks[0]["message_id"] == "wamid.RX"
    assert fake_graph.read_marks[0]["typing_indicator"] == {"type": "text"}


async def test_no_read_receipt_while_paused(client: TestClient, fake_graph: FakeGraph) -> None:
    await start_conversation(client, fake_graph)
    marks = len(fake_graph.read_marks)
    await client.post(f"/api/conversations/{PHONE}/pause", headers=AUTH)
    await post_webhook(client, text_message("wamid.NR", PHONE, "ciao"))
    await wait_handled(client, 2)
    assert len(fake_graph.read_marks) == marks


async def test_handoff_keyword_pauses_and_flags(client: TestClient, fake_openai: FakeOpenAI,
                                                fake_graph: FakeGraph) -> None:
    await post_webhook(client, text_message("wamid.HK", PHONE, "Vorrei parlare con un operatore per favore"))
    await fake_graph.wait_for_sent(1)
    assert "persona" in fake_graph.texts()[0]
    assert fake_openai.responses_requests() == []
    conv = await repos_of(client).conversations.find(PHONE)
    assert conv is not None and conv.paused and conv.needs_human
    listing = await (await client.get("/api/conversations", headers=AUTH)).json()
    assert listing["conversations"][0]["state"] == "needs_human"


async def test_customer_reaction_is_stored_without_reply(client: TestClient, fake_openai: FakeOpenAI,
                                                         fake_graph: FakeGraph) -> None:
    await post_webhook(client, load_sample("reaction"))
    await wait_handled(client, 1)
    assert fake_openai.responses_requests() == [] and fake_graph.sent == []


async def test_location_and_contacts_are_described_without_phone_numbers(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await post_webhook(client, load_sample("location"))
    await fake_graph.wait_for_sent(1)
    await post_webhook(client, load_sample("contacts"))
    await fake_graph.wait_for_sent(2)
    first, second = fake_openai.responses_requests()
    assert "location" in str(first["input"])
    assert "contact card" in str(second["input"])
    traffic = fake_openai.all_traffic_text()
    import orjson

    from tests.fakes.meta import load_sample as raw

    for contact in orjson.loads(raw("contacts"))["entry"][0]["changes"][0]["value"]["messages"][0]["contacts"]:
        for phone in contact.get("phones", []):
            assert phone["phone"] not in traffic
            assert phone.get("wa_id", "none") not in traffic


async def test_image_goes_to_the_model_as_image_input(client: TestClient, fake_openai: FakeOpenAI,
                                                      fake_graph: FakeGraph) -> None:
    fake_graph.media["1000000000000101"] = (b"\xff\xd8\xff\xe0fakejpeg", "image/jpeg")
    await post_webhook(client, load_sample("image"))
    await fake_graph.wait_for_sent(1)
    content = fake_openai.responses_requests()[0]["input"][0]["content"]
    assert content[0] == {"type": "input_text", "text": "Questa, in blu?"}
    assert content[1]["type"] == "input_image"
    assert content[1]["image_url"].startswith("data:image/jpeg;base64,")


async def test_voice_note_is_transcribed_and_stored(client: TestClient, fake_openai: FakeOpenAI,
                                                    fake_graph: FakeGraph) -> None:
    fake_graph.media["1000000000000102"] = (b"OggS fake opus", "audio/ogg")
    fake_openai.transcript = "vorrei ordinare due pani integrali"
    await post_webhook(client, load_sample("audio_voice"))
    await fake_graph.wait_for_sent(1)
    assert fake_graph.texts() == ["Echo: vorrei ordinare due pani integrali"]
    stored = await repos_of(client).db.fetchval("SELECT text FROM inbox WHERE type = 'audio'")
    assert stored == "vorrei ordinare due pani integrali"


async def test_failed_media_download_gets_a_record_and_a_reply(client: TestClient, fake_openai: FakeOpenAI,
                                                               fake_graph: FakeGraph) -> None:
    await post_webhook(client, load_sample("image"))  # the fake has no such media id
    await fake_graph.wait_for_sent(1)
    assert fake_openai.responses_requests() == []
    assert "file" in fake_graph.texts()[0].lower()
    row = await repos_of(client).db.fetchrow("SELECT type, message FROM errors")
    assert row is not None and row["type"] == "media_failed:image"


async def test_oversized_media_is_refused(client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph) -> None:
    fake_graph.media["1000000000000101"] = (b"x" * (16 * 1024 * 1024 + 10), "image/jpeg")
    await post_webhook(client, load_sample("image"))
    await fake_graph.wait_for_sent(1)
    message = await repos_of(client).db.fetchval("SELECT message FROM errors")
    assert "16 MB" in message


async def test_unsupported_type_gets_a_polite_reply_in_the_customers_language(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    await post_webhook(client, text_message("wamid.L0", PHONE, "Buongiorno, vorrei delle informazioni sugli orari"))
    await fake_graph.wait_for_sent(1)
    await post_webhook(client, load_sample("unsupported"))
    await fake_graph.wait_for_sent(2)
    assert "testo" in fake_graph.texts()[-1]


async def test_request_human_tool_hands_off(client: TestClient, fake_openai: FakeOpenAI,
                                            fake_graph: FakeGraph) -> None:
    fake_openai.script.append(CallTools([("request_human", {"reason": "wants a refund"})]))
    fake_openai.script.append(Reply("Ti passo un collega"))
    await post_webhook(client, text_message("wamid.RH", PHONE, "Voglio un rimborso adesso"))
    await fake_graph.wait_for_sent(1)
    await wait_handled(client, 1)
    conv = await repos_of(client).conversations.find(PHONE)
    assert conv is not None and conv.needs_human and conv.paused
    assert "persona" in fake_graph.texts()[0]
