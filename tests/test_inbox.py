"""Operator inbox: live events, test chat, paging, media proxy, contacts, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp.test_utils import TestClient

from bot.texts import TEXTS
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import load_sample, status_update, text_message
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import repos_of, sign_in, wait_handled, wait_sent, wait_until

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PHONE = "393330000000"


async def read_events(resp: object, want: int, timeout: float = 5.0) -> list[tuple[str, str, str]]:
    """Read SSE frames (id, event, data) until `want` events arrived."""
    events: list[tuple[str, str, str]] = []
    frame: dict[str, str] = {}

    async def reader() -> None:
        async for raw in resp.content:  # type: ignore[attr-defined]
            line = raw.decode().rstrip("\n")
            if not line:
                if "event" in frame:
                    events.append((frame.get("id", ""), frame["event"], frame.get("data", "")))
                    if len(events) >= want:
                        return
                frame.clear()
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            frame[key] = value

    await asyncio.wait_for(reader(), timeout)
    return events


async def test_inbox_page_needs_sign_in_and_renders(client: TestClient) -> None:
    resp = await client.get("/inbox", allow_redirects=False)
    assert resp.status in (302, 303)
    assert "/login" in resp.headers["Location"]
    await sign_in(client)
    page = await (await client.get("/inbox")).text()
    assert 'id="conversations"' in page and "Test chat" in page and "/static/inbox.js" in page
    script = await client.get("/static/inbox.js")
    assert script.status == 200 and "EventSource" in await script.text()


async def test_new_message_arrives_live_and_reconnect_catches_up(
    client: TestClient, fake_graph: FakeGraph
) -> None:
    await sign_in(client)
    stream = await client.get("/inbox/events")
    assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    started = time.monotonic()
    await post_webhook(client, text_message("wamid.LIVE1", PHONE, "Ciao, ci siete?"))
    first = await read_events(stream, 1)
    assert time.monotonic() - started < 1.0
    assert first[0][1] == "message" and '"author":"customer"' in first[0][2]
    last_seen = first[0][0]
    stream.close()
    # While disconnected: the AI reply and a status change happen.
    await fake_graph.wait_for_sent(1)
    wamid = (await wait_sent(client, 1))[0]["wamid"]
    await post_webhook(client, status_update(wamid, "read", PHONE))
    again = await client.get("/inbox/events", headers={"Last-Event-ID": last_seen})
    missed = await read_events(again, 2)
    kinds = [kind for _, kind, _ in missed]
    assert "message" in kinds
    assert int(missed[0][0]) > int(last_seen)
    again.close()


async def test_test_chat_runs_the_pipeline_without_whatsapp(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    csrf = await sign_in(client)
    resp = await client.post("/api/test-chat/messages", json={"text": "Buongiorno, avete il pane integrale?"},
                             headers={"X-CSRF-Token": csrf})
    assert resp.status == 202
    conversation = (await resp.json())["conversation"]
    assert conversation == "test-admin"

    async def replied() -> list[dict[str, object]] | None:
        resp = await client.get(f"/api/conversations/{conversation}/messages")
        if resp.status != 200:
            return None  # not yet stored
        data = await resp.json()
        replies = [m for m in data["messages"] if m["author"] == "ai"]
        return replies or None

    replies = await wait_until(replied, what="the test chat reply")
    assert replies[0]["text"] == "Echo: Buongiorno, avete il pane integrale?"
    assert fake_graph.sent == [] and fake_graph.read_marks == []
    assert len(fake_openai.responses_requests()) == 1
    # Test chats have their own tab, and stay out of every other one.
    listing = await (await client.get("/api/conversations?tab=test", headers=AUTH)).json()
    assert listing["conversations"][0]["is_test"] is True
    assert (await (await client.get("/api/conversations", headers=AUTH)).json())["conversations"] == []
    metrics = await (await client.get("/metrics", headers=AUTH)).text()
    assert 'bot_messages_in_total{type="text"}' not in metrics
    # The same takeover rules apply: an operator message in the test chat pauses it, nothing leaves.
    await client.post(f"/api/conversations/{conversation}/messages", json={"text": "Sono un operatore"},
                      headers=AUTH)
    assert fake_graph.sent == []
    await client.post("/api/test-chat/messages", json={"text": "ancora io"}, headers={"X-CSRF-Token": csrf})
    await wait_handled(client, 2)
    assert len(fake_openai.responses_requests()) == 1


async def test_test_chat_rejects_bad_input(client: TestClient) -> None:
    for body in (b"nope", b"{}", b'{"text": 5}', b'{"text": "   "}'):
        resp = await client.post("/api/test-chat/messages", data=body, headers=AUTH)
        assert resp.status == 400


async def test_list_is_paged_searchable_and_indexed(client: TestClient, fake_graph: FakeGraph) -> None:
    repos = repos_of(client)
    now = time.time()
    async with repos.db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO conversations (phone_number_id, customer_id, wa_id, profile_name, session_id, created_at, "
            "updated_at, last_activity_at, needs_human) VALUES ('1', $1, $2, $3, $4, $5, $6, $7, $8)",
            [(f"39300{i:07d}", f"39300{i:07d}", f"Cliente {i}", f"s_{i}", now, now, now - i, int(i == 7777))
             for i in range(10_000)],
        )
        # Every conversation has its contact (the ingest makes both): the search finds people by it.
        await conn.executemany(
            "INSERT INTO contacts (phone_number_id, customer_id, wa_id, name, created_at, updated_at) "
            "VALUES ('1', $1, $2, $3, $4, $5)",
            [(f"39300{i:07d}", f"39300{i:07d}", f"Cliente {i}", now, now) for i in range(10_000)],
        )
    started = time.monotonic()
    page = await (await client.get("/api/conversations?limit=50", headers=AUTH)).json()
    elapsed = time.monotonic() - started
    assert len(page["conversations"]) == 50
    assert page["conversations"][0]["name"] == "Cliente 7777"  # needs human first
    assert page["conversations"][1]["name"] == "Cliente 0"
    second = await (await client.get("/api/conversations?limit=50&offset=50", headers=AUTH)).json()
    assert second["conversations"][0]["name"] == "Cliente 49"
    found = await (await client.get("/api/conversations?q=Cliente 1234", headers=AUTH)).json()
    assert [c["name"] for c in found["conversations"]] == ["Cliente 1234"]
    explain = "EXPLAIN QUERY PLAN" if repos.db.dialect == "sqlite" else "EXPLAIN"
    plan = await repos.db.fetch(
        f"{explain} SELECT * FROM conversations ORDER BY needs_human DESC, last_activity_at DESC NULLS LAST LIMIT 50")
    assert any("conversations_activity" in str(tuple(r)) for r in plan), plan
    assert elapsed < 2.0, "a page of the list must not load the whole table"
    bad = await client.get("/api/conversations?limit=abc", headers=AUTH)
    assert bad.status == 400


async def test_media_proxy_and_contacts(client: TestClient, fake_graph: FakeGraph) -> None:
    fake_graph.media["1000000000000101"] = (b"\xff\xd8\xff\xe0photo", "image/jpeg")
    await post_webhook(client, load_sample("image"))
    await fake_graph.wait_for_sent(1)
    thread = await (await client.get(f"/api/conversations/{PHONE}/messages", headers=AUTH)).json()
    image = next(m for m in thread["messages"] if m["type"] == "image")
    assert image["media"].startswith("/api/media/")
    photo = await client.get(image["media"], headers=AUTH)
    assert photo.status == 200 and photo.content_type == "image/jpeg"
    # The proxy's own caching stands (the /api/* default is no-store), and the file is never sniffed.
    assert photo.headers["Cache-Control"] == "private, max-age=300"
    assert photo.headers["X-Content-Type-Options"] == "nosniff"
    assert await photo.read() == b"\xff\xd8\xff\xe0photo"
    assert (await client.get("/api/media/999", headers=AUTH)).status == 404
    assert (await client.get(image["media"])).status == 401
    contacts = await (await client.get("/api/contacts", headers=AUTH)).json()
    assert contacts["contacts"][0]["name"] == "Test User"


async def test_metrics_after_a_known_scenario(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    from tests.fakes.graph_server import GraphFailure
    from tests.fakes.openai_server import CallTools, Fail

    client = await make_client()
    fake_openai.script.extend([CallTools([("search_products", {"query": "pane", "limit": None})])])
    await post_webhook(client, text_message("wamid.M1", PHONE, "avete del pane?"))
    await post_webhook(client, text_message("wamid.M1", PHONE, "avete del pane?"))  # a duplicate
    await fake_graph.wait_for_sent(1)
    await wait_handled(client, 1)
    fake_graph.errors.append(GraphFailure(400, 131047, "Re-engagement message"))
    fake_openai.script.append(Fail(401, code="invalid_api_key", message="bad key"))
    await post_webhook(client, text_message("wamid.M2", "393330000009", "hello there, anyone around?"))
    await wait_handled(client, 2)

    async def failed_send() -> bool:
        text = await (await client.get("/metrics", headers=AUTH)).text()
        return 'bot_send_failures_total{code="131047"} 1.0' in text

    await wait_until(failed_send, what="the failed send to be counted")
    text = await (await client.get("/metrics", headers=AUTH)).text()
    assert 'bot_messages_in_total{type="text"} 2.0' in text
    assert "bot_duplicate_deliveries_total 1.0" in text
    assert 'bot_messages_out_total{author="ai"} 1.0' in text
    assert 'bot_tool_calls_total{outcome="ok",tool="search_products"} 1.0' in text
    assert 'bot_errors_total{type="openai_auth"} 1.0' in text
    assert 'bot_turn_seconds_count{outcome="answered"} 1.0' in text
    assert 'bot_turn_seconds_count{outcome="failed"} 1.0' in text
    assert "bot_model_call_seconds_count 3.0" in text
    assert "bot_live_actors 2.0" in text
    assert "bot_inbox_pending 0.0" in text
    assert (await client.get("/metrics")).status == 401


async def test_test_chats_stay_out_of_the_whatsapp_counts(client: TestClient, fake_graph: FakeGraph) -> None:
    await post_webhook(client, text_message("wamid.REAL", PHONE, "Buongiorno"))
    await fake_graph.wait_for_sent(1)
    await client.post("/api/test-chat/messages", json={"text": "prova"}, headers=AUTH)
    await wait_handled(client, 2)

    async def test_reply() -> bool:
        return bool(await repos_of(client).db.fetchval("SELECT COUNT(*) FROM outbox WHERE phone_number_id = 'test'"))

    await wait_until(test_reply, what="the test chat reply")
    diagnostics = await (await client.get("/api/diagnostics", headers=AUTH)).json()
    text = str(diagnostics)
    assert "'incoming': 1" in text and "'outgoing': 1" in text


async def test_a_failed_reply_shows_in_the_list_and_the_thread(client: TestClient, fake_graph: FakeGraph) -> None:
    from tests.fakes.graph_server import GraphFailure

    async def latest_reply_is(*statuses: str) -> bool:
        status = await repos_of(client).db.fetchval("SELECT status FROM outbox ORDER BY id DESC LIMIT 1")
        return status in statuses

    async def listed() -> dict[str, Any]:
        page = await (await client.get("/api/conversations", headers=AUTH)).json()
        return dict(page["conversations"][0])

    fake_graph.errors.append(GraphFailure.re_engagement())  # Meta refuses the reply for good
    await post_webhook(client, text_message("wamid.F1", PHONE, "Ciao", name="Franco"))
    await wait_until(lambda: latest_reply_is("failed"), what="the refused reply")
    conv = await listed()
    assert conv["last_outbound_status"] == "failed"
    assert conv["state"] == "ai"  # shown beside the state: a failed send does not change it
    thread = await (await client.get(f"/api/conversations/{PHONE}/messages", headers=AUTH)).json()
    assert thread["conversation"]["last_outbound_status"] == "failed"

    # The next reply goes out: the conversation is no longer shown as failed.
    await post_webhook(client, text_message("wamid.F2", PHONE, "Ci sei?", name="Franco"))
    await wait_until(lambda: latest_reply_is("sent", "delivered", "read"), what="the reply that went out")
    assert (await listed())["last_outbound_status"] == "sent"


async def test_the_test_chat_without_an_openai_key_says_so_at_once_and_keeps_the_message(
    make_client: ClientFactory, fake_openai: FakeOpenAI
) -> None:
    client = await make_client(openai_api_key="", openai_base_url=None)  # as on a fresh install
    csrf = await sign_in(client)
    resp = await client.post("/api/test-chat/messages", json={"text": "Hello, do you sell bread?"},
                             headers={"X-CSRF-Token": csrf})
    assert resp.status == 202
    answer = await resp.json()
    assert "OPENAI_API_KEY" in answer["warning"]  # shown under the message the operator just typed

    async def thread() -> list[dict[str, Any]]:
        got = await client.get(f"/api/conversations/{answer['conversation']}/messages")
        return list((await got.json())["messages"]) if got.status == 200 else []

    # The typed message is in the thread straight away, and the fallback follows in seconds, in English.
    assert [m["text"] for m in await thread()][:1] == ["Hello, do you sell bread?"]
    async def with_fallback() -> list[dict[str, Any]] | None:
        messages = await thread()
        return messages if any(m["author"] == "system" for m in messages) else None

    messages = await wait_until(with_fallback, what="the fallback", timeout=10)
    fallback = next(m for m in messages if m["author"] == "system")
    assert fallback["text"] == TEXTS["fallback"]["en"]
    assert fake_openai.responses_requests() == []  # no call made without a key


async def test_the_first_test_chat_message_shows_before_its_slow_turn_ends(
    client: TestClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 3.0  # the model is thinking
    csrf = await sign_in(client)
    resp = await client.post("/api/test-chat/messages", json={"text": "Ciao, ci siete?"},
                             headers={"X-CSRF-Token": csrf})
    conversation = (await resp.json())["conversation"]
    shown = await client.get(f"/api/conversations/{conversation}/messages")
    assert shown.status == 200
    messages = (await shown.json())["messages"]
    assert [(m["author"], m["text"]) for m in messages] == [("customer", "Ciao, ci siete?")]
    listing = await (await client.get("/api/conversations?tab=test", headers=AUTH)).json()
    assert [c["customer_id"] for c in listing["conversations"]] == [conversation]
