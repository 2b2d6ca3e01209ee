"""Outbound event webhooks on the settings page (admins): add an endpoint, switch it on or off, delete it.

The signing secret is generated here (or typed by the admin), shown once, and stored encrypted: the
page never shows it again, only its last four characters.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from aiohttp import web

from bot.persistence.events import KINDS
from bot.web import settings_page
from bot.web.auth import audit_fields, principal_of
from bot.web.keys import EVENT_DELIVERY, REPOS

routes = web.RouteTableDef()

MAX_URL = 2000


def url_problem(url: str) -> str | None:
    """Why an endpoint URL cannot be used, or None."""
    if not url or len(url) > MAX_URL:
        return f"Give the endpoint's address, e.g. https://example.com/hooks/bot (at most {MAX_URL} characters)."
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "The address must start with https:// (or http:// on a private network) and name a host."
    if parts.username or parts.password:
        return "Put no user name or password in the address: the signature proves the events are ours."
    return None


@routes.post("/settings/webhooks")
async def add_endpoint(request: web.Request) -> web.Response:
    """Add an endpoint: URL, the events it wants, and a secret (made here when left empty, shown once)."""
    form = await request.post()
    url = str(form.get("url", "")).strip()
    kinds = [str(k) for k in form.getall("kinds", [])]
    typed = str(form.get("secret", "")).strip()
    problem = url_problem(url)
    if problem is None and not kinds:
        problem = "Tick at least one event to send."
    if problem is None and any(k not in KINDS for k in kinds):
        problem = "Unknown event: choose among the ones listed."
    if problem is None and typed and not 16 <= len(typed) <= 200:
        problem = "A secret of your own has 16 to 200 characters (or leave it empty and one is made for you)."
    if problem is not None:
        return await settings_page.page(request, status=400, desk_errors={"hooks": problem})
    secret = typed or "whsec_" + secrets.token_urlsafe(32)
    delivery = request.app[EVENT_DELIVERY]
    await request.app[REPOS].webhooks.add_endpoint(url, delivery.box.encrypt(secret), secret[-4:], kinds,
                                                   user=principal_of(request).username)
    await request.app[REPOS].audit.record("webhook_added", detail=f"{url[:200]} ({', '.join(kinds)})",
                                          **audit_fields(request))
    delivery.poke()
    return await settings_page.page(
        request, notice="Webhook endpoint added. Events are signed with the secret below in the "
                        "X-Bot-Signature-256 header.", hook_secret=None if typed else secret)


@routes.post("/settings/webhooks/{endpoint_id:\\d{1,18}}/toggle")
async def toggle_endpoint(request: web.Request) -> web.Response:
    """Switch an endpoint on or off."""
    endpoint_id = int(request.match_info["endpoint_id"])
    repo = request.app[REPOS].webhooks
    current = next((e for e in await repo.endpoints() if e.id == endpoint_id), None)
    if current is None:
        return await settings_page.page(request, status=404, desk_errors={"hooks": "No such webhook endpoint."})
    await repo.set_enabled(endpoint_id, not current.enabled)
    await request.app[REPOS].audit.record("webhook_enabled" if not current.enabled else "webhook_disabled",
                                          detail=current.url[:200], **audit_fields(request))
    raise web.HTTPSeeOther(f"/settings?done={'hook_disabled' if current.enabled else 'hook_enabled'}#webhooks")


@routes.post("/settings/webhooks/{endpoint_id:\\d{1,18}}/delete")
async def delete_endpoint(request: web.Request) -> web.Response:
    """Delete an endpoint and its queue."""
    endpoint_id = int(request.match_info["endpoint_id"])
    if not await request.app[REPOS].webhooks.delete_endpoint(endpoint_id):
        return await settings_page.page(request, status=404, desk_errors={"hooks": "No such webhook endpoint."})
    await request.app[REPOS].audit.record("webhook_deleted", detail=str(endpoint_id), **audit_fields(request))
    raise web.HTTPSeeOther("/settings?done=hook_deleted#webhooks")
