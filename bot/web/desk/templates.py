"""Message templates in the desk: the WABA's list, sending one (the only way to write after the 24-hour
window), and syncing them from WhatsApp on demand.

A send is checked here the way Meta would check it (unknown template, not approved, wrong parameters),
so the operator gets the reason at once as a 400; then it is queued for the conversation's actor.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from bot.persistence.templates import StoredTemplate
from bot.web import settings_page
from bot.web.auth import audit_fields
from bot.web.jsonapi import conversation_of, json_object, ok, refuse, username
from bot.web.keys import REPOS, TAKEOVER, TEMPLATE_SYNC
from bot.whatsapp.client import GraphError
from bot.whatsapp.templates import TemplateError, TemplateSyncError, prepare_send, variables

routes = web.RouteTableDef()

SEND_EXAMPLE = '{"name": "order_ready", "language": "it", "parameters": ["Giulia", "ORD-7K3Q9X"]}'


def _component_text(components: list[Any], kind: str) -> str | None:
    for c in components:
        if isinstance(c, dict) and str(c.get("type", "")).upper() == kind and isinstance(c.get("text"), str):
            return str(c["text"])
    return None


def template_json(t: StoredTemplate) -> dict[str, Any]:
    """A template as the desk shows it: what to fill in, and the parts of the preview."""
    try:
        components = orjson.loads(t.components_json)
    except orjson.JSONDecodeError:
        components = []
    components = components if isinstance(components, list) else []
    buttons = next((c.get("buttons") for c in components
                    if isinstance(c, dict) and str(c.get("type", "")).upper() == "BUTTONS"), None)
    return {
        "name": t.name, "language": t.language, "category": t.category, "status": t.status, "reason": t.reason,
        "parameters": variables(t.body_text), "parameter_count": t.parameter_count,
        "header": _component_text(components, "HEADER"), "body": t.body_text,
        "footer": _component_text(components, "FOOTER"),
        "buttons": [str(b.get("text", "")) for b in buttons if isinstance(b, dict)] if isinstance(buttons, list)
        else [],
    }


@routes.get("/api/templates")
async def templates(request: web.Request) -> web.Response:
    """The WABA's synced templates (approved or not, with Meta's status), and how the sync stands."""
    sync = request.app[TEMPLATE_SYNC]
    stored = await request.app[REPOS].templates.all(waba_id=sync.waba_id or None)
    return ok({"templates": [template_json(t) for t in stored], "waba_id": sync.waba_id or None,
               "synced_at": sync.synced_at, "problem": sync.problem, "error": sync.error})


@routes.post("/api/conversations/{wa_id}/template")
async def send_template(request: web.Request) -> web.Response:
    """Send an approved template (allowed after the 24-hour window): 202 once queued for the actor."""
    conv = await conversation_of(request)
    body = await json_object(request, SEND_EXAMPLE)
    name, language, parameters = body.get("name"), body.get("language"), body.get("parameters", [])
    if not isinstance(name, str) or not name or not isinstance(language, str) or not language:
        return refuse(400, f'"name" and "language" are required, as in {SEND_EXAMPLE}')
    if not isinstance(parameters, list) or not all(isinstance(p, str) for p in parameters):
        return refuse(400, '"parameters" is a list of texts, one per variable of the template, in order')
    sync = request.app[TEMPLATE_SYNC]
    template = await request.app[REPOS].templates.get(name[:512], language[:32], waba_id=sync.waba_id or None)
    if template is None:
        return refuse(400, f"unknown template {name[:100]!r} in language {language[:32]!r}: it is not among the "
                           "synced templates (GET /api/templates lists them; sync again after creating it in "
                           "WhatsApp Manager)", reason="unknown_template")
    if template.status != "APPROVED":
        return refuse(400, f"template {template.name} ({template.language}) is {template.status}: only approved "
                           "templates can be sent", reason="not_approved", template_status=template.status)
    expected = len(variables(template.body_text))
    if len(parameters) != expected:
        return refuse(400, f"template {template.name} ({template.language}) takes {expected} parameter"
                           f"{'' if expected == 1 else 's'}, got {len(parameters)}", reason="parameter_count",
                      expected=expected)
    try:
        prepared = prepare_send(template, parameters)
    except TemplateError as exc:
        return refuse(400, str(exc), reason="invalid_parameter")
    row = await request.app[TAKEOVER].send_template(conv, name=prepared.name, language=prepared.language,
                                                    components=prepared.components, preview=prepared.preview,
                                                    user=username(request))
    return ok({"id": row.id, "status": row.status, "preview": prepared.preview}, 202)


async def _sync(request: web.Request) -> tuple[int | None, str | None, int]:
    """Run a sync now: (count, None, 200), or (None, what went wrong, HTTP status)."""
    try:
        count = await request.app[TEMPLATE_SYNC].sync_now()
    except TemplateSyncError as exc:
        return None, str(exc), 400
    except GraphError as exc:
        return None, f"WhatsApp did not give the templates: {exc.reason}", 502
    await request.app[REPOS].audit.record("templates_synced", detail=str(count), **audit_fields(request))
    return count, None, 200


@routes.post("/api/templates/sync")
async def sync_api(request: web.Request) -> web.Response:
    """Sync the templates from WhatsApp now (admins)."""
    count, problem, status = await _sync(request)
    if problem is not None:
        return refuse(status, problem)
    return ok({"count": count, "synced_at": request.app[TEMPLATE_SYNC].synced_at})


@routes.post("/settings/templates/sync")
async def sync_form(request: web.Request) -> web.Response:
    """The settings page's "Sync now" button."""
    _, problem, status = await _sync(request)
    if problem is not None:
        return await settings_page.page(request, status=status, desk_errors={"templates": problem})
    raise web.HTTPSeeOther("/settings?done=templates_synced#templates")
