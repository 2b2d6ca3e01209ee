"""Canned replies: the list the reply box's `/` picker reads (variables filled for the open conversation),
and the settings page's forms that keep it (admins)."""

from __future__ import annotations

from aiohttp import web

from bot.persistence.canned import KNOWN_VARIABLES, CannedError, fill
from bot.web import settings_page
from bot.web.auth import audit_fields, principal_of
from bot.web.jsonapi import find_conversation, ok, refuse
from bot.web.keys import REPOS

routes = web.RouteTableDef()


@routes.get("/api/canned-replies")
async def canned_replies(request: web.Request) -> web.Response:
    """Every canned reply; with ?conversation=<wa_id>, each also `filled` for that conversation.

    `{{name}}` is the contact's name and `{{order_code}}` their latest order's code; a variable with no
    value (or unknown) stays visible in `filled`, so the operator sees it before sending.
    """
    repos = request.app[REPOS]
    replies = await repos.canned.all()
    values: dict[str, str | None] = {}
    ident = request.query.get("conversation")
    if ident:
        conv = await find_conversation(request, ident)
        if conv is None:
            return refuse(404, f"no conversation with {ident[:64]!r}")
        contact = await repos.contacts.for_conversation(conv.phone_number_id, conv.customer_id)
        values = {"name": (contact.name if contact else None) or conv.profile_name,
                  "order_code": await repos.orders.latest_code(contact.id) if contact else None}
    return ok({
        "canned_replies": [{"id": r.id, "shortcut": r.shortcut, "text": r.text, "filled": fill(r.text, values)}
                           for r in replies],
        "variables": {name: values.get(name) for name in KNOWN_VARIABLES} if ident else None,
    })


@routes.post("/settings/canned")
async def save_canned(request: web.Request) -> web.Response:
    """Add a canned reply, or change one (the form's `id`)."""
    form = await request.post()
    raw_id = str(form.get("id", "")).strip()
    reply_id = int(raw_id) if raw_id.isascii() and raw_id.isdigit() and len(raw_id) < 19 else None
    shortcut, text = str(form.get("shortcut", "")), str(form.get("text", ""))
    try:
        saved = await request.app[REPOS].canned.save(shortcut, text, user=principal_of(request).username,
                                                     reply_id=reply_id)
    except CannedError as exc:
        return await settings_page.page(request, status=400, desk_errors={"canned": str(exc)})
    await request.app[REPOS].audit.record("canned_reply_saved", detail=f"/{saved.shortcut}", **audit_fields(request))
    raise web.HTTPSeeOther("/settings?done=canned_saved#canned")


@routes.post("/settings/canned/{reply_id:\\d{1,18}}/delete")
async def delete_canned(request: web.Request) -> web.Response:
    """Delete a canned reply."""
    reply_id = int(request.match_info["reply_id"])
    if not await request.app[REPOS].canned.delete(reply_id):
        return await settings_page.page(request, status=404, desk_errors={"canned": "That canned reply no longer "
                                                                                    "exists."})
    await request.app[REPOS].audit.record("canned_reply_deleted", detail=str(reply_id), **audit_fields(request))
    raise web.HTTPSeeOther("/settings?done=canned_deleted#canned")
