"""JSON API for operators and other software: conversations, their messages, takeover controls."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, cast

import orjson
from aiohttp import web

from bot.actors.media import MAX_MEDIA_BYTES
from bot.actors.takeover import SERVICE_WINDOW_SECONDS, WindowClosed, window_open
from bot.persistence.conversations import Conversation
from bot.persistence.desk import TABS, ListQuery, Tab
from bot.web.jsonapi import conversation_of, ok, page_params, refuse, username
from bot.web.keys import REPOS, SENDER, TAKEOVER, USER
from bot.whatsapp.client import GraphError
from bot.whatsapp.interactive import render_choices
from bot.whatsapp.text import MAX_TEXT

routes = web.RouteTableDef()

MEDIA_TYPES = {"image", "audio", "video", "document", "sticker"}
LIST_EXAMPLE = "?tab=needs_human|paused|failed|mine|unassigned|all|test&label=ID&q=words&limit=50&offset=0"


def conversation_state(conv: Conversation, now: float) -> str:
    """One word for operators: needs_human, paused, failed or ai."""
    if conv.needs_human and conv.paused:
        return "needs_human"
    if conv.is_paused(now):
        return "paused"
    if conv.state == "failed":
        return "failed"
    return "ai"


def _column(row: Any, name: str) -> Any:
    try:
        return row[name]
    except (IndexError, KeyError):
        return None


def conversation_json(conv: Conversation, row: Any, now: float,
                      labels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A conversation as the API shows it."""
    closes = None if conv.is_test or conv.last_inbound_at is None else conv.last_inbound_at + SERVICE_WINDOW_SECONDS
    return {
        "id": conv.id,
        "wa_id": conv.wa_id,
        "customer_id": conv.customer_id,
        "phone_number_id": conv.phone_number_id,
        "name": _column(row, "contact_name") or conv.profile_name,
        "state": conversation_state(conv, now),
        "paused_until": conv.paused_until if conv.is_paused(now) else None,
        "needs_human": conv.needs_human,
        "flag": conv.flag,  # rate_limited | loop | budget | identity_changed: for an operator to look at
        "flag_at": conv.flag_at,
        "language": conv.language,
        "is_test": conv.is_test,
        "last_message": _column(row, "last_message_preview"),
        # A failed send leaves `state` alone (the AI may answer again, a person may hold it): shown beside it.
        "last_outbound_status": _column(row, "last_outbound_status"),
        "last_activity_at": _column(row, "last_activity_at"),
        "last_inbound_at": conv.last_inbound_at,
        "assigned_to": conv.assigned_to,
        "unread": _column(row, "unread"),
        "labels": labels or [],
        # Meta's 24-hour window for free-form messages; after it, only approved templates.
        "window_open": window_open(conv, now),
        "window_closes_at": closes,
    }


@routes.get("/api/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    """One tab of the inbox (needs-human first, then most recent), optionally one label's and a search's.

    ?tab=needs_human|paused|failed|mine|unassigned|all (default; test chats excepted)|test, ?label=<id>,
    ?q=<words or a number> (full text over contacts and messages), ?limit and ?offset.
    """
    limit, offset = page_params(request)
    tab = request.query.get("tab", "all")
    if tab not in TABS:
        return refuse(400, f"unknown tab {tab[:40]!r}: use one of {', '.join(TABS)}")
    raw_label = request.query.get("label", "")
    if raw_label and not (raw_label.isascii() and raw_label.isdigit() and len(raw_label) < 19):
        return refuse(400, "label must be a label's id (GET /api/labels lists them)")
    query = ListQuery(tab=cast(Tab, tab), user=username(request), label_id=int(raw_label) if raw_label else None,
                      text=request.query.get("q", ""), limit=limit, offset=offset)
    repos = request.app[REPOS]
    rows = await repos.desk.page(query)
    labels = await repos.desk.labels_of([int(r["id"]) for r in rows])
    now = time.time()
    items = [conversation_json(Conversation.from_row(r), r, now, labels.get(int(r["id"]))) for r in rows]
    return ok({"conversations": items, "tab": tab, "limit": limit, "offset": offset})


def _body(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _shown_body(kind: str, raw: str | None) -> Any:
    """What an outgoing message offered, as the customer saw it: the buttons or list of an interactive
    message (the AI's choices rendered as they were sent), or which template went out."""
    body = _body(raw)
    if kind == "choices" and isinstance(body, dict):
        try:
            rendered = render_choices(str(body.get("text") or ""), body.get("choices") or [],
                                      language=body.get("language"))
        except ValueError:
            return None
        return rendered.interactive  # None when they went as numbered text (the text shows them)
    return body if kind in ("interactive", "template") else None


@routes.get("/api/conversations/{wa_id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    """Every message of a conversation, oldest first: customer (inbox) and ai/operator/system (outbox),
    and the team's private notes beside them (`notes`, never sent)."""
    conv = await conversation_of(request)
    repos = request.app[REPOS]
    inbound = await repos.db.fetch(
        "SELECT id, wamid, type, text, status, last_error, received_at, revoked_at FROM inbox "
        "WHERE phone_number_id = $1 AND customer_id = $2 ORDER BY id",
        conv.phone_number_id, conv.customer_id,
    )
    outbound = await repos.outbox.for_conversation(conv.key)
    messages: list[dict[str, Any]] = [
        {
            "id": f"in-{r['id']}", "direction": "in", "author": "customer", "type": r["type"], "kind": r["type"],
            "text": r["text"], "status": r["status"], "error": r["last_error"] if r["status"] == "failed" else None,
            "created_at": r["received_at"],
            "deleted_at": r["revoked_at"],  # the customer deleted it (WhatsApp "delete for everyone")
            "media": f"/api/media/{r['id']}" if r["type"] in MEDIA_TYPES and not conv.is_test else None,
        }
        for r in inbound
        if r["type"] != "revoke"  # a deletion shows on the message it deleted, not as a message of its own
    ]
    messages.extend(
        {
            "id": f"out-{r['id']}", "direction": "out", "author": r["author"], "type": r["kind"], "kind": r["kind"],
            "text": r["text"], "status": r["status"], "error_code": r["error_code"], "error": r["error_reason"]
            if r["status"] in ("failed", "unknown") else None, "created_at": r["created_at"],
            "body": _shown_body(r["kind"], r["body"]),
        }
        for r in outbound
    )
    messages.sort(key=lambda m: m["created_at"])
    latest_out = outbound[-1]["status"] if outbound else None
    notes = [{"id": n.id, "author": n.author, "text": n.text, "created_at": n.created_at}
             for n in await repos.notes.of(conv.id)]
    labels = [asdict(label) for label in await repos.labels.of(conv.id)]
    for label in labels:
        label.pop("conversations", None)
    contact = await repos.contacts.for_conversation(conv.phone_number_id, conv.customer_id)
    row = {"last_message_preview": conv.last_message_preview, "last_activity_at": conv.last_activity_at,
           "last_outbound_status": latest_out, "contact_name": contact.name if contact else None}
    return ok({"conversation": conversation_json(conv, row, time.time(), labels), "messages": messages,
               "notes": notes})


@routes.post("/api/conversations/{wa_id}/messages")
async def send_operator_message(request: web.Request) -> web.Response:
    """An operator's message: queued for the conversation's actor (202), which pauses the AI and sends it."""
    conv = await conversation_of(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return refuse(400, 'send JSON like {"text": "..."}')
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return refuse(400, '"text" must be a non-empty string')
    if len(text) > MAX_TEXT:
        return refuse(400, f'"text" is longer than WhatsApp allows ({MAX_TEXT} characters)')
    user = request.get(USER)
    try:
        row = await request.app[TAKEOVER].operator_message(conv, text.strip(), user=user.username if user else None)
    except WindowClosed as exc:
        return refuse(409, str(exc))
    return ok({"id": row.id, "status": row.status, "error": None}, 202)


@routes.post("/api/conversations/{wa_id}/pause")
async def pause(request: web.Request) -> web.Response:
    """Hold the AI for this conversation until handed back."""
    conv = await conversation_of(request)
    await request.app[TAKEOVER].pause(conv)
    return ok({"state": "paused"})


@routes.post("/api/conversations/{wa_id}/resume")
async def resume(request: web.Request) -> web.Response:
    """Hand the conversation back to the AI; whoever had taken it lets it go."""
    conv = await conversation_of(request)
    await request.app[TAKEOVER].resume(conv)
    await request.app[REPOS].conversations.set_assigned(conv.id, None)
    return ok({"state": "ai", "assigned_to": None})


@routes.get("/api/media/{inbox_id}")
async def media(request: web.Request) -> web.StreamResponse:
    """A customer's photo, voice note or document, fetched from Meta for an operator (never stored here)."""
    try:
        inbox_id = int(request.match_info["inbox_id"])
    except ValueError:
        return refuse(400, "the media id must be a number")
    if not 0 < inbox_id < 2**63:
        return refuse(404, "no media for that message")
    rows = await request.app[REPOS].inbox.get_many([inbox_id])
    if not rows or rows[0].type not in MEDIA_TYPES:
        return refuse(404, "no media for that message")
    payload = orjson.loads(rows[0].payload)
    item = payload.get(rows[0].type) if isinstance(payload, dict) else None
    media_id = item.get("id") if isinstance(item, dict) else None
    if not isinstance(media_id, str):
        return refuse(404, "that message carries no media id")
    sender = request.app[SENDER]
    try:
        info = await sender.media_url(media_id)
        data = await sender.download(str(info["url"]), max_bytes=MAX_MEDIA_BYTES)
    except GraphError as exc:
        return refuse(502, f"Meta did not give the file: {exc.reason} (media links expire after some weeks)")
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
    limit, offset = page_params(request)
    query = request.query.get("q", "").replace("\x00", "")  # LIKE stops at a NUL, see list_conversations
    found = await request.app[REPOS].contacts.page(query=query, limit=limit, offset=offset)
    return ok({"contacts": [asdict(c) for c in found], "limit": limit, "offset": offset})
