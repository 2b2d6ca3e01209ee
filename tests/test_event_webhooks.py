"""Outbound event webhooks: endpoints on the settings page, signed deliveries retried until a 2xx, and
compare-and-set claims so that two workers never deliver the same event at once."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from bot.backoff import Backoff
from bot.integrations.webhooks import EventDelivery
from bot.persistence.events import event_stmts
from bot.web.keys import EVENT_DELIVERY
from tests.conftest import post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.hook_receiver import FakeHookReceiver
from tests.fakes.meta import text_message
from tests.fakes.openai_server import CallTools, FakeOpenAI, Reply
from tests.helpers import repos_of, wait_handled, wait_until
from tests.web.helpers import admin, post_form

CUSTOMER = "393334000001"


@pytest.fixture
async def receiver() -> AsyncIterator[FakeHookReceiver]:
    """A fake CRM endpoint on loopback."""
    async with FakeHookReceiver() as fake:
        yield fake


async def add_endpoint(client: TestClient, csrf: str, url: str, *kinds: str) -> str:
    """Add an endpoint through the settings form; returns the secret the page shows once."""
    data = aiohttp.FormData({"csrf_token": csrf, "url": url, "secret": ""})
    for kind in kinds:
        data.add_field("kinds", kind)
    resp = await client.post("/settings/webhooks", data=data)
    page = await resp.text()
    assert resp.status == 200, page
    found = re.search(r'id="hook-secret" value="([^"]+)"', page)
    assert found is not None, "the page shows the new secret once"
    return found.group(1)


async def test_events_are_signed_and_retried_until_the_endpoint_answers(
    client: TestClient, fake_graph: FakeGraph, receiver: FakeHookReceiver
) -> None:
    csrf = await admin(client)
    receiver.secret = await add_endpoint(client, csrf, receiver.url, "message.received")
    assert receiver.secret.startswith("whsec_") and len(receiver.secret) > 40
    repos = repos_of(client)
    stored = await repos.db.fetchval("SELECT secret_enc FROM webhook_endpoints")
    assert receiver.secret not in stored  # encrypted at rest, and never shown again
    assert receiver.secret not in await (await client.get("/settings")).text()

    receiver.statuses.extend([500, 500])  # down twice, then up
    await post_webhook(client, text_message("wamid.H1", CUSTOMER, "Vorrei ordinare il caffè", name="Giulia"))
    await receiver.wait_until(lambda: len(receiver.delivered()) == 1, what="the delivery that got a 200")
    await wait_handled(client, 1)  # the AI's reply is sent too: reply.sent is written, but not wanted here

    attempts = receiver.received
    assert [status for _, _, status in attempts] == [500, 500, 200]
    assert all(valid for _, valid, _ in attempts), "every attempt is signed with the endpoint's secret"
    assert len({r.body for r, _, _ in attempts}) == 1, "every attempt sends the same bytes"
    request = attempts[0][0]
    assert request.header("Content-Type") == "application/json" and request.header("X-Bot-Event") == "message.received"
    event = orjson.loads(request.body)
    assert set(event) == {"id", "kind", "created_at", "data"} and event["kind"] == "message.received"
    assert event["data"]["text"] == "Vorrei ordinare il caffè" and event["data"]["wa_id"] == CUSTOMER
    assert receiver.verify(request.body + b" ", request.header("X-Bot-Signature-256")) is False

    async def settled() -> list[object]:
        rows = await repos.webhooks.deliveries()
        return list(rows) if rows and rows[0]["status"] == "delivered" else []

    rows = await wait_until(settled, what="the delivery recorded")
    assert [(r["event_id"], r["status"], r["attempts"], r["last_status"]) for r in rows] == [
        (event["id"], "delivered", 3, 200)]
    kinds = {r[0] for r in await repos.db.fetch("SELECT kind FROM events")}
    assert {"message.received", "reply.sent"} <= kinds  # reply.sent exists, but was not for this endpoint
    assert len(receiver.received) == 3
    page = await (await client.get("/settings")).text()
    assert receiver.url in page and "1 delivered, 0 waiting, 0 given up" in page


async def test_two_workers_never_deliver_one_event_twice_and_failures_show(
    client: TestClient, receiver: FakeHookReceiver
) -> None:
    csrf = await admin(client)
    receiver.secret = await add_endpoint(client, csrf, receiver.url, "order.created", "order.confirmed")
    repos = repos_of(client)
    await repos.db.write([s for n in range(30)
                          for s in event_stmts("order.created", {"order_id": n, "code": f"ORD-{n:06d}"})])
    delivery = client.app[EVENT_DELIVERY]
    session = aiohttp.ClientSession()
    try:
        # Two more workers (as two more processes would be) race the app's own for the same queue.
        others = [EventDelivery(repo=repos.webhooks, session=session, box=delivery.box,
                                backoff=Backoff(base=0.01, maximum=0.05, attempts=3)) for _ in range(2)]
        await asyncio.gather(*(w.run_once() for w in others), *(w.run_once() for w in others))
        await receiver.wait_until(lambda: len(receiver.delivered()) >= 30, what="30 deliveries")
    finally:
        await session.close()
    ids = [e["id"] for e in receiver.delivered()]
    assert len(ids) == len(set(ids)) == 30, "each event once, by one worker"
    assert all(valid for _, valid, _ in receiver.received)

    # An endpoint that cannot be reached: its failures are on the settings page, and retried later.
    dead = "http://127.0.0.1:9/hook"
    await add_endpoint(client, csrf, dead, "order.confirmed")
    await repos.db.write(event_stmts("order.confirmed", {"order_id": 1, "code": "ORD-000001"}))
    delivery.poke()

    async def failed() -> bool:
        rows = await repos.webhooks.recent_failures()
        return any(r["url"] == dead and r["last_error"] for r in rows)

    await wait_until(failed, what="the failed attempt recorded")
    page = await (await client.get("/settings")).text()
    assert "could not reach the endpoint" in page and "Recent failures" in page

    # Switched off, an endpoint gets nothing queued; bad forms say why.
    endpoint = next(e for e in await repos.webhooks.endpoints() if e.url == receiver.url)
    assert (await post_form(client, f"/settings/webhooks/{endpoint.id}/toggle", csrf)).status == 303
    await repos.db.write(event_stmts("order.created", {"order_id": 99}))
    latest = await repos.db.fetchval("SELECT MAX(id) FROM events")
    assert await repos.db.fetchval("SELECT COUNT(*) FROM webhook_deliveries WHERE event_id = $1", latest) == 0
    for url, words in (("ftp://example.com/x", "must start with https://"), ("https://u:p@example.com", "no user"),
                       ("", "Give the endpoint")):
        resp = await post_form(client, "/settings/webhooks", csrf, url=url, kinds="order.created")
        assert resp.status == 400 and words in await resp.text(), url
    resp = await post_form(client, "/settings/webhooks", csrf, url=receiver.url)
    assert resp.status == 400 and "Tick at least one event" in await resp.text()
    assert (await post_form(client, f"/settings/webhooks/{endpoint.id}/delete", csrf)).status == 303
    assert receiver.url not in await (await client.get("/settings")).text()



async def test_a_hand_off_and_the_reply_are_delivered_as_their_events(
    client: TestClient, fake_openai: FakeOpenAI, receiver: FakeHookReceiver
) -> None:
    csrf = await admin(client)
    receiver.secret = await add_endpoint(client, csrf, receiver.url, "handoff.requested", "reply.sent")
    fake_openai.script.append(CallTools([("request_human", {"reason": "wants to speak to the owner"})]))
    fake_openai.script.append(Reply("(not used)"))
    await post_webhook(client, text_message("wamid.HO1", CUSTOMER, "Voglio parlare con il titolare"))
    await receiver.wait_until(lambda: len(receiver.delivered()) == 2, what="the hand-off and its text")
    assert all(valid for _, valid, _ in receiver.received)
    events: list[dict[str, Any]] = receiver.delivered()  # type: ignore[assignment]
    kinds = sorted(e["kind"] for e in events)
    assert kinds == ["handoff.requested", "reply.sent"]
    handoff = next(e for e in events if e["kind"] == "handoff.requested")
    assert handoff["data"]["wa_id"] == CUSTOMER and "owner" in handoff["data"]["reason"]
    reply = next(e for e in events if e["kind"] == "reply.sent")
    assert reply["data"]["author"] == "system" and reply["data"]["wa_id"] == CUSTOMER  # the hand-off text
