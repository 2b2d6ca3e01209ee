"""JSON API for operators and other software: conversations, their messages, takeover controls."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from bot.actors.media import MAX_MEDIA_BYTES
from bot.actors.takeover import WindowClosed
from bot.persistence.conversations import Conversation
from bot.persistence.database import like_contains
from bot.web.keys import REPOS, SENDER, TAKEOVER, USER
from bot.whatsapp.client import GraphError
from bot.whatsapp.text import MAX_TEXT

routes = web.RouteTableDef()

MEDIA_TYPES = {"image", "audio", "video", "document", "sticker"}
# Past the last row a page is empty anyway; beyond SQLite's 64-bit INTEGER the query would fail with a 500.
MAX_OFFSET = 10**9


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


def _name(conv: Conversation, row: Any) -> str | None:
    try:
        contact_name = row["contact_name"]
    except (IndexError, KeyError):
        contact_name = None
    return contact_name or conv.profile_name


def conversation_json(conv: Conversation, row: Any, now: float) -> dict[str, Any]:
    """A conversation as the API shows it."""
    return {
        "id": conv.id,
        "wa_id": conv.wa_id,
        "customer_id": conv.customer_id,
        "phone_number_id": conv.phone_number_id,
        "name": _name(conv, row),
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
        offset = max(0, min(MAX_OFFSET, int(request.query.get("offset", "0"))))
    except ValueError:
        return _error(400, "limit and offset must be whole numbers")
    # SQLite's LIKE stops at a NUL: "rossi\0x" would find every name ending in "rossi".
    query = request.query.get("q", "").replace("\x00", "").strip()
    where, params = "", []
    if query:
        # LIKE with bound parameters: the search text can never become SQL.
        like = like_contains(query.lower())
        where = ("WHERE lower(c.profile_name) LIKE $1 ESCAPE '\\' OR lower(k.name) LIKE $1 ESCAPE '\\' "
                 "OR c.wa_id LIKE $1 ESCAPE '\\' OR lower(c.customer_id) LIKE $1 ESCAPE '\\'")
        params = [like]
    n = len(params)
    rows = await request.app[REPOS].db.fetch(
        "SELECT c.*, k.name AS contact_name FROM conversations c LEFT JOIN contacts k "
        "ON k.phone_number_id = c.phone_number_id AND k.customer_id = c.customer_id "
        f"{where} ORDER BY c.needs_human DESC, c.last_activity_at DESC NULLS LAST LIMIT ${n + 1} OFFSET ${n + 2}",
        *params, limit, offset,
    )
    now = time.time()
    items = [conversation_json(Conversation.from_row(r), r, now) for r in rows]
    return _json({"conversations": items, "limit": limit, "offset": offset})


@routes.get("/api/conversations/{wa_id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    """Every message of a conversation, oldest first: customer (inbox) and ai/operator/system (outbox)."""
    conv = await _conversation(request)
    repos = request.app[REPOS]
    inbound = await repos.db.fetch(
        "SELECT id, wamid, type, text, status, last_error, received_at FROM inbox "
        "WHERE phone_number_id = $1 AND customer_id = $2 ORDER BY id",
        conv.phone_number_id, conv.customer_id,
    )
    outbound = await repos.outbox.for_conversation(conv.key)
    messages: list[dict[str, Any]] = [
        {
            "id": f"in-{r['id']}", "direction": "in", "author": "customer", "type": r["type"], "text": r["text"],
            "status": r["status"], "error": r["last_error"] if r["status"] == "failed" else None,
            "created_at": r["received_at"],
            "media": f"/api/media/{r['id']}" if r["type"] in MEDIA_TYPES and not conv.is_test else None,
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
    """An operator's message: queued for the conversation's actor (202), which pauses the AI and sends it."""
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
    user = request.get(USER)
    try:
        row = await request.app[TAKEOVER].operator_message(conv, text.strip(), user=user.username if user else None)
    except WindowClosed as exc:
        return _error(409, str(exc))
    return _json({"id": row.id, "status": row.status, "error": None}, 202)


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


@routes.get("/api/media/{inbox_id}")
async def media(request: web.Request) -> web.StreamResponse:
    """A customer's photo, voice note or document, fetched from Meta for an operator (never stored here)."""
    try:
        inbox_id = int(request.match_info["inbox_id"])
    except ValueError:
        return _error(400, "the media id must be a number")
    if not 0 < inbox_id < 2**63:
        return _error(404, "no media for that message")
    rows = await request.app[REPOS].inbox.get_many([inbox_id])
    if not rows or rows[0].type not in MEDIA_TYPES:
        return _error(404, "no media for that message")
    payload = orjson.loads(rows[0].payload)
    item = payload.get(rows[0].type) if isinstance(payload, dict) else None
    media_id = item.get("id") if isinstance(item, dict) else None
    if not isinstance(media_id, str):
        return _error(404, "that message carries no media id")
    sender = request.app[SENDER]
    try:
        info = await sender.media_url(media_id)
        data = await sender.download(str(info["url"]), max_bytes=MAX_MEDIA_BYTES)
    except GraphError as exc:
        return _error(502, f"Meta did not give the file: {exc.reason} (media links expire after some weeks)")
    mime = str(info.get("mime_type") or "application/octet-stream").split(";")[0]
    return web.Response(body=data, content_type=mime, headers={
        "Cache-Control": "private, max-age=300",
        "Content-Disposition": "inline",
        "X-Content-Type-Options": "nosniff",
        # A document could be HTML: never let it run in our origin.
        "Content-Security-Policy": "sandbox",
    })


@routes.get("/api/contacts")
async def contacts(request: web.Request) -> web.Response:
    """CRM contacts, most recently updated first; ?q= searches name, email, company or number."""
    try:
        limit = max(1, min(200, int(request.query.get("limit", "50"))))
        offset = max(0, min(MAX_OFFSET, int(request.query.get("offset", "0"))))
    except ValueError:
        return _error(400, "limit and offset must be whole numbers")
    query = request.query.get("q", "").replace("\x00", "")  # LIKE stops at a NUL, see list_conversations
    found = await request.app[REPOS].contacts.page(query=query, limit=limit, offset=offset)
    return _json({"contacts": [asdict(c) for c in found], "limit": limit, "offset": offset})
