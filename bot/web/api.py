"""JSON API for operators and other software: conversations, their messages, takeover controls."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from bot.actors.takeover import WindowClosed
from bot.persistence.conversations import Conversation
from bot.web.keys import REPOS, TAKEOVER
from bot.whatsapp.text import MAX_TEXT

routes = web.RouteTableDef()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def conversation_state(conv: Conversation, now: float) -> str:
    """One word for operators: needs_human, paused, failed or ai."""
    if conv.needs_human and conv.paused:
        return "needs_human"
    if conv.is_paused(now):
        return "paused"
    if conv.state == "failed":
        return "failed"
    return "ai"


def conversation_json(conv: Conversation, row: Any, now: float) -> dict[str, Any]:
    """A conversation as the API shows it."""
    return {
        "id": conv.id,
        "wa_id": conv.wa_id,
        "customer_id": conv.customer_id,
        "phone_number_id": conv.phone_number_id,
        "name": conv.profile_name,
        "state": conversation_state(conv, now),
        "paused_until": conv.paused_until if conv.is_paused(now) else None,
        "needs_human": conv.needs_human,
        "language": conv.language,
        "is_test": conv.is_test,
        "last_message": row["last_message_preview"],
        "last_activity_at": row["last_activity_at"],
        "last_inbound_at": conv.last_inbound_at,
    }


async def _conversation(request: web.Request) -> Conversation:
    ident = request.match_info["wa_id"]
    conv = await request.app[REPOS].conversations.find(ident)
    if conv is None:
        raise web.HTTPNotFound(text=orjson.dumps({"error": f"no conversation with {ident!r}"}).decode(),
                               content_type="application/json")
    return conv


@routes.get("/api/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    """Conversations, needs-human first then most recent; paged with ?limit and ?offset, searchable with ?q."""
    try:
        limit = max(1, min(200, int(request.query.get("limit", "50"))))
        offset = max(0, int(request.query.get("offset", "0")))
    except ValueError:
        return _error(400, "limit and offset must be whole numbers")
    query = request.query.get("q", "").strip()
    where, params = "", []
    if query:
        like = f"%{query.replace('%', '').replace('_', '')}%"
        where = "WHERE profile_name LIKE ? OR wa_id LIKE ? OR customer_id LIKE ?"
        params = [like, like, like]
    rows = await request.app[REPOS].db.fetchall(
        f"SELECT * FROM conversations {where} ORDER BY needs_human DESC, last_activity_at DESC LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    now = time.time()
    items = [conversation_json(Conversation.from_row(r), r, now) for r in rows]
    return _json({"conversations": items, "limit": limit, "offset": offset})


@routes.get("/api/conversations/{wa_id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    """Every message of a conversation, oldest first: customer (inbox) and ai/operator/system (outbox)."""
    conv = await _conversation(request)
    repos = request.app[REPOS]
    inbound = await repos.db.fetchall(
        "SELECT id, wamid, type, text, status, last_error, received_at FROM inbox "
        "WHERE phone_number_id = ? AND customer_id = ? ORDER BY id",
        (conv.phone_number_id, conv.customer_id),
    )
    outbound = await repos.outbox.for_conversation(conv.phone_number_id, conv.customer_id)
    messages: list[dict[str, Any]] = [
        {
            "id": f"in-{r['id']}", "direction": "in", "author": "customer", "type": r["type"], "text": r["text"],
            "status": r["status"], "error": r["last_error"] if r["status"] == "failed" else None,
            "created_at": r["received_at"],
        }
        for r in inbound
    ]
    messages.extend(
        {
            "id": f"out-{r['id']}", "direction": "out", "author": r["author"], "type": r["kind"], "text": r["text"],
            "status": r["status"], "error_code": r["error_code"], "error": r["error_reason"]
            if r["status"] in ("failed", "unknown") else None, "created_at": r["created_at"],
        }
        for r in outbound
    )
    messages.sort(key=lambda m: m["created_at"])
    return _json({"conversation": conversation_json(conv, {"last_message_preview": None,
                                                          "last_activity_at": None}, time.time()),
                  "messages": messages})


@routes.post("/api/conversations/{wa_id}/messages")
async def send_operator_message(request: web.Request) -> web.Response:
    """An operator's message: sent on WhatsApp at once, and the AI pauses for this conversation."""
    conv = await _conversation(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, 'send JSON like {"text": "..."}')
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return _error(400, '"text" must be a non-empty string')
    if len(text) > MAX_TEXT:
        return _error(400, f'"text" is longer than WhatsApp allows ({MAX_TEXT} characters)')
    user = request.get("user")
    try:
        row_id = await request.app[TAKEOVER].operator_message(conv, text.strip(), user=getattr(user, "name", None))
    except WindowClosed as exc:
        return _error(409, str(exc))
    row = await request.app[REPOS].outbox.get(row_id)
    status = row.status if row else "unknown"
    error = row.error_reason if row is not None and status == "failed" else None
    return _json({"id": row_id, "status": status, "error": error}, 201)


@routes.post("/api/conversations/{wa_id}/pause")
async def pause(request: web.Request) -> web.Response:
    """Hold the AI for this conversation until handed back."""
    conv = await _conversation(request)
    await request.app[TAKEOVER].pause(conv)
    return _json({"state": "paused"})


@routes.post("/api/conversations/{wa_id}/resume")
async def resume(request: web.Request) -> web.Response:
    """Hand the conversation back to the AI."""
    conv = await _conversation(request)
    await request.app[TAKEOVER].resume(conv)
    return _json({"state": "ai"})
