"""The operator inbox: the page, its live event stream (SSE), and the browser test chat."""

from __future__ import annotations

import secrets
import time
from contextlib import suppress

import orjson
from aiohttp import web

from bot import readiness
from bot.domain.conversation import InboundMessage
from bot.persistence.conversations import TEST_NUMBER_ID
from bot.web.keys import CONFIG, INGEST, LIVE, STORED_SETTINGS, USER
from bot.web.pages import budget_banner, render
from bot.whatsapp.events import WebhookBatch
from bot.whatsapp.text import MAX_TEXT

routes = web.RouteTableDef()

KEEPALIVE_SECONDS = 15.0


@routes.get("/inbox")
async def inbox_page(request: web.Request) -> web.Response:
    """The inbox: conversation list, thread view, reply box, takeover buttons, test chat."""
    return render(request, "inbox.html", banner=await budget_banner(request.app))


@routes.get("/inbox/events")
async def inbox_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events; a reconnecting browser sends Last-Event-ID and gets what it missed."""
    hub = request.app[LIVE]
    raw = request.headers.get("Last-Event-ID") or request.query.get("last", "")
    last_id = int(raw) if raw.isascii() and raw.isdigit() else hub.last_id  # "²".isdigit() but int("²") fails
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # nginx would otherwise hold the stream back
    })
    await response.prepare(request)
    await response.write(b"retry: 1000\n\n")
    with suppress(ConnectionResetError):
        while not hub.closed:
            signal = hub.signal
            missed = hub.since(last_id)
            if missed is None:
                # Too far behind: the page reloads its lists instead of replaying.
                await response.write(b"id: %d\nevent: reset\ndata: {}\n\n" % hub.last_id)
                last_id = hub.last_id
            elif missed:
                for event in missed:
                    await response.write(event.encode())
                last_id = missed[-1].id
            else:
                await hub.wait(signal, KEEPALIVE_SECONDS)
                if not hub.since(last_id):
                    await response.write(b": keep-alive\n\n")
    return response


@routes.post("/api/test-chat/messages")
async def test_chat_message(request: web.Request) -> web.Response:
    """Talk to the assistant as a simulated customer: the full pipeline runs, nothing goes to WhatsApp."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.json_response({"error": 'send JSON like {"text": "..."}'}, status=400)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return web.json_response({"error": '"text" must be a non-empty string'}, status=400)
    if len(text) > MAX_TEXT:
        return web.json_response({"error": f'"text" is longer than {MAX_TEXT} characters'}, status=400)
    user = request.get(USER)
    who = user.username if user is not None else "api"
    customer_id = f"test-{who}"
    wamid = f"test.{secrets.token_hex(12)}"
    message = InboundMessage(
        wamid=wamid,
        phone_number_id=TEST_NUMBER_ID,
        customer_id=customer_id,
        wa_id=None,
        user_id=None,
        profile_name=f"Test chat ({who})",
        type="text",
        text=text.strip(),
        payload={"id": wamid, "type": "text", "text": {"body": text.strip()}, "test": True},
        timestamp=int(time.time()),
    )
    await request.app[INGEST].accept(WebhookBatch(messages=[message], statuses=[], echoes=[]))
    answer: dict[str, str] = {"conversation": customer_id, "wamid": wamid}
    # Said here, where the operator is looking, not only in the start-up log: without a key the AI cannot answer.
    missing = [p for p in await readiness.check(request.app[CONFIG], request.app[STORED_SETTINGS])
               if p.setting == "OPENAI_API_KEY"]
    if missing:
        answer["warning"] = f"{missing[0].effect} {missing[0].fix}"
    return web.json_response(answer, status=202)
