"""The desk's conversation routes: tab counts, taking and assigning, read markers, labels, notes, the contact panel.

Nothing here touches what the conversation's actor owns: taking a conversation pauses the AI through
Takeover (a command for the actor), and the rest are the desk's own tables and `assigned_to`.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from aiohttp import web

from bot.persistence.conversations import Conversation
from bot.persistence.labels import LabelError
from bot.persistence.notes import MAX_NOTE
from bot.tools.money import format_price
from bot.web.jsonapi import conversation_of, json_object, ok, refuse, stop, username
from bot.web.keys import LIVE, REPOS, TAKEOVER

routes = web.RouteTableDef()

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,63}$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
CONTACT_LIMITS = {"name": 200, "email": 254, "company": 200, "language": 16, "notes": 4000}


def _changed(request: web.Request, conv: Conversation, what: str) -> None:
    """Other operators' pages refresh (the live stream)."""
    request.app[LIVE].publish("conversation", conversation=conv.customer_id, change=what)


def _label_json(labels: list[Any]) -> list[dict[str, Any]]:
    return [{"id": label.id, "name": label.name, "color": label.color} for label in labels]


@routes.get("/api/conversations/counts")
async def counts(request: web.Request) -> web.Response:
    """How many conversations each tab holds (test chats in none), and the labels with theirs."""
    repos = request.app[REPOS]
    labels = await repos.labels.all()
    return ok({"counts": await repos.desk.counts(username(request)),
               "labels": [asdict(label) for label in labels]})


@routes.post("/api/conversations/{wa_id}/take")
async def take(request: web.Request) -> web.Response:
    """"I'm taking this": the conversation is the caller's, and the AI holds until it is handed back."""
    conv = await conversation_of(request)
    who = username(request)
    await request.app[REPOS].conversations.set_assigned(conv.id, who)
    # Always: a cooldown would otherwise bring the AI back while the conversation is someone's.
    await request.app[TAKEOVER].pause(conv)
    _changed(request, conv, "assigned")
    return ok({"assigned_to": who, "state": "needs_human" if conv.needs_human else "paused"})


@routes.post("/api/conversations/{wa_id}/assign")
async def assign(request: web.Request) -> web.Response:
    """Give the conversation to a user (`{"username": "maria"}`) or to nobody (`{"username": null}`); the AI is
    left as it is."""
    conv = await conversation_of(request)
    body = await json_object(request, '{"username": "maria"} or {"username": null}')
    if "username" not in body:
        return refuse(400, 'send {"username": "<a user>"}, or {"username": null} to release the conversation')
    name = body["username"]
    holder: str | None = None
    if name is not None:
        user = await request.app[REPOS].users.by_name(name) if isinstance(name, str) and len(name) <= 64 else None
        if user is None:
            return refuse(400, f"there is no user {str(name)[:64]!r}: the settings page lists the users")
        holder = user.username
    await request.app[REPOS].conversations.set_assigned(conv.id, holder)
    _changed(request, conv, "assigned")
    return ok({"assigned_to": holder})


@routes.post("/api/conversations/{wa_id}/read")
async def mark_read(request: web.Request) -> web.Response:
    """An operator has seen the conversation (up to `{"up_to": <inbox id>}`, default all): no longer unread."""
    conv = await conversation_of(request)
    raw = await request.read()
    up_to: int | None = None
    if raw.strip():
        body = await json_object(request, '{"up_to": 123} or nothing')
        value = body.get("up_to")
        if isinstance(value, str) and value.startswith("in-"):
            value = value[3:]
            value = int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62):
            return refuse(400, '"up_to" is the id of a customer message (as in "in-123"), or leave it out')
        up_to = value
    marker = await request.app[REPOS].desk.mark_read(conv.id, up_to=up_to, user=username(request))
    return ok({"last_read": marker})


# -- labels ---------------------------------------------------------------------------------------


@routes.get("/api/labels")
async def labels(request: web.Request) -> web.Response:
    """Every label, with how many conversations carry it."""
    return ok({"labels": [asdict(label) for label in await request.app[REPOS].labels.all()]})


@routes.post("/api/labels")
async def create_label(request: web.Request) -> web.Response:
    """Make a label (`{"name": "VIP", "color": "#e53935"}`; colour optional), or give one a colour."""
    body = await json_object(request, '{"name": "VIP", "color": "#e53935"}')
    try:
        label = await request.app[REPOS].labels.ensure(body.get("name"), body.get("color"), user=username(request))
    except LabelError as exc:
        return refuse(400, str(exc))
    return ok({"id": label.id, "name": label.name, "color": label.color}, 201)


@routes.post("/api/conversations/{wa_id}/labels")
async def add_label(request: web.Request) -> web.Response:
    """Label a conversation by name (made on the fly if new) or by id: `{"name": "VIP"}` or `{"id": 3}`."""
    conv = await conversation_of(request)
    body = await json_object(request, '{"name": "VIP"} or {"id": 3}')
    repos = request.app[REPOS]
    if "id" in body:
        label_id = body["id"]
        found = await repos.labels.get(label_id) if isinstance(label_id, int) and 0 < label_id < 2**62 else None
        if found is None:
            return refuse(404, f"no label with id {str(label_id)[:20]}")
    else:
        try:
            found = await repos.labels.ensure(body.get("name"), body.get("color"), user=username(request))
        except LabelError as exc:
            return refuse(400, str(exc))
    try:
        await repos.labels.attach(conv.id, found.id, user=username(request))
    except LookupError as exc:
        return refuse(404, str(exc))
    _changed(request, conv, "labels")
    return ok({"labels": _label_json(await repos.labels.of(conv.id))}, 201)


@routes.delete("/api/conversations/{wa_id}/labels/{label_id:\\d{1,18}}")
async def remove_label(request: web.Request) -> web.Response:
    """Take a label off a conversation."""
    conv = await conversation_of(request)
    repos = request.app[REPOS]
    if not await repos.labels.detach(conv.id, int(request.match_info["label_id"])):
        return refuse(404, "this conversation does not carry that label")
    _changed(request, conv, "labels")
    return ok({"labels": _label_json(await repos.labels.of(conv.id))})


# -- notes ----------------------------------------------------------------------------------------


@routes.get("/api/conversations/{wa_id}/notes")
async def notes(request: web.Request) -> web.Response:
    """The team's private notes on a conversation, oldest first."""
    conv = await conversation_of(request)
    return ok({"notes": [asdict(n) for n in await request.app[REPOS].notes.of(conv.id)]})


@routes.post("/api/conversations/{wa_id}/notes")
async def add_note(request: web.Request) -> web.Response:
    """A private note (`{"text": "..."}`): kept in the thread for the team, never sent, never shown to the AI."""
    conv = await conversation_of(request)
    body = await json_object(request, '{"text": "..."}')
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return refuse(400, '"text" must be a non-empty string')
    if len(text) > MAX_NOTE:
        return refuse(400, f'"text" is longer than {MAX_NOTE} characters')
    note = await request.app[REPOS].notes.add(conv.id, username(request), text.strip())
    _changed(request, conv, "note")
    return ok(asdict(note), 201)


# -- the contact panel ----------------------------------------------------------------------------


async def _panel(request: web.Request, conv: Conversation) -> dict[str, Any]:
    repos = request.app[REPOS]
    contact = await repos.contacts.for_conversation(conv.phone_number_id, conv.customer_id)
    orders = await repos.orders.for_contact(contact.id, limit=10) if contact is not None else []
    language = contact.language if contact is not None else None
    others = await repos.desk.past_conversations(conv.id, conv.wa_id)
    return {
        "contact": None if contact is None else {
            "id": contact.id, "name": contact.name, "name_source": contact.name_source, "email": contact.email,
            "company": contact.company, "language": contact.language, "notes": contact.notes,
            "wa_id": contact.wa_id,
        },
        "orders": [{"id": o.id, "code": o.code, "status": o.status, "total_cents": o.total_cents,
                    "currency": o.currency, "total": format_price(o.total_cents, o.currency, language),
                    "created_at": o.created_at, "items": sum(line.quantity for line in o.lines)} for o in orders],
        "conversations": [{"customer_id": r["customer_id"], "phone_number_id": r["phone_number_id"],
                           "last_activity_at": r["last_activity_at"], "last_message": r["last_message_preview"]}
                          for r in others],
    }


@routes.get("/api/conversations/{wa_id}/contact")
async def contact(request: web.Request) -> web.Response:
    """The contact panel: who the customer is, their orders, and their conversations on other numbers."""
    conv = await conversation_of(request)
    return ok(await _panel(request, conv))


def _contact_changes(body: dict[str, Any]) -> dict[str, str]:
    unknown = sorted(set(body) - set(CONTACT_LIMITS))
    if unknown:
        stop(400, f"unknown field {unknown[0][:40]!r}: a contact has {', '.join(CONTACT_LIMITS)}")
    changes: dict[str, str] = {}
    for field, limit in CONTACT_LIMITS.items():
        if field not in body or body[field] is None:
            continue
        value = body[field]
        if not isinstance(value, str):
            stop(400, f'"{field}" must be text')
        value = value.strip()
        if len(value) > limit:
            stop(400, f'"{field}" has at most {limit} characters')
        if field == "email" and value and not EMAIL.match(value):
            stop(400, f"{value[:60]!r} is not an email address")
        if field == "language" and value and not LANGUAGE.match(value):
            stop(400, '"language" is a language code such as "it", "en" or "pt-BR"')
        if field == "name" and not value:
            stop(400, "a contact's name cannot be empty (write one, or leave the field out)")
        changes[field] = value
    return changes


@routes.put("/api/conversations/{wa_id}/contact")
async def edit_contact(request: web.Request) -> web.Response:
    """An operator corrects the contact: any of name, email, company, language, notes (notes are replaced)."""
    conv = await conversation_of(request)
    changes = _contact_changes(await json_object(request, '{"name": "...", "email": "...", "notes": "..."}'))
    repos = request.app[REPOS]
    found = await repos.contacts.for_conversation(conv.phone_number_id, conv.customer_id)
    if found is None:
        found = await repos.contacts.ensure(conv.phone_number_id, conv.customer_id, wa_id=conv.wa_id,
                                            user_id=conv.user_id, profile_name=conv.profile_name)
    await repos.contacts.update(found.id, source="operator", append_notes=False, name=changes.get("name"),
                                email=changes.get("email"), company=changes.get("company"),
                                notes=changes.get("notes"), language=changes.get("language"))
    # The model's next turn sees the corrected contact (an operator's name is never overwritten by WhatsApp's).
    request.app[TAKEOVER].contact_changed(conv)
    _changed(request, conv, "contact")
    return ok(await _panel(request, conv))
