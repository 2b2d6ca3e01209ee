"""The AI Assistant Settings page (admins): settings, connection test, knowledge base upload, users, API tokens.

`GET/PUT /api/settings` give the same settings as JSON. The OpenAI key is write-only everywhere.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import BodyPartReader, web

from bot.ai.knowledge import MAX_PDF_BYTES, KnowledgeError
from bot.configuration.stored_settings import SettingsView, Validated, validate
from bot.domain.knowledge import KnowledgeDoc
from bot.persistence.users import UserExists
from bot.texts import plural
from bot.web import limits
from bot.web.auth import CSRF_FIELD, audit_fields, checks_csrf_itself, csrf_ok, principal_of
from bot.web.desk.settings_context import settings_context
from bot.web.keys import ACCESS, COSTS, KEY_CHECKER, KNOWLEDGE, REPOS, SETTINGS, STORED_SETTINGS
from bot.web.pages import render

log = structlog.get_logger("bot.web.settings")

routes = web.RouteTableDef()

NOTICES = {
    "saved": "Saved. The changes apply from the next customer message; no restart needed.",
    "saved_unused": "Saved, but not in use: “Use stored settings” is not ticked, so the server keeps running on "
                    "its environment settings (OPENAI_API_KEY, BOT_MODEL, …). Tick it and press Save to use the "
                    "values on this page. The knowledge base settings apply either way.",
    "business_saved": "Saved: the budget, opening hours and window template apply from the next customer message.",
    "price_saved": "Price saved: spend is counted with it from the next model call.",
    "user_added": "User added. Give them their password in person or by phone, not by email.",
    "user_deleted": "User removed.",
    "token_revoked": "Token revoked: software using it is locked out from now on.",
    "uploaded": "PDF received. It is being indexed now: the status below changes to “ready” when done.",
    "canned_saved": "Canned reply saved. Type / in the inbox's reply box to use it.",
    "canned_deleted": "Canned reply deleted.",
    "hook_enabled": "Webhook endpoint switched on: it gets the events from now on.",
    "hook_disabled": "Webhook endpoint switched off: its events are not queued while it is off.",
    "hook_deleted": "Webhook endpoint deleted, with its queue of deliveries.",
    "templates_synced": "Templates synced from WhatsApp.",
}


def knowledge_json(doc: KnowledgeDoc | None, *, enabled: bool) -> dict[str, Any]:
    """The knowledge base's state for the page and the API."""
    if doc is None:
        return {"enabled": enabled, "status": "empty", "error": None, "filename": None, "pages": None,
                "mode": None, "size": None, "uploaded_at": None, "indexed_at": None}
    return {"enabled": enabled, "status": doc.status, "error": doc.error, "filename": doc.filename,
            "pages": doc.pages, "mode": doc.mode, "size": doc.size, "uploaded_at": doc.uploaded_at,
            "indexed_at": doc.indexed_at}


def settings_json(view: SettingsView, doc: KnowledgeDoc | None) -> dict[str, Any]:
    """GET /api/settings: every field, the key only as set/masked."""
    return {
        "use_stored_settings": view.use_stored,
        "openai_api_key_set": view.openai_api_key_set,
        "openai_api_key_masked": view.openai_api_key_masked,
        "openai_api_key_source": view.openai_api_key_source,
        "openai_api_key_problem": view.openai_api_key_problem,
        "model": view.model,
        "instructions": view.instructions,
        "client_name": view.client_name,
        "autoreply": view.autoreply,
        "reaction": view.reaction,
        "reaction_emoji": view.reaction_emoji,
        "human_cooldown_seconds": view.human_cooldown_seconds,
        "burst_window_ms": view.burst_window_ms,
        "knowledge_base": {**knowledge_json(doc, enabled=view.kb_enabled), "mode": view.kb_mode,
                           "indexed_mode": doc.mode if doc else None},
        "updated_at": view.updated_at,
        "updated_by": view.updated_by,
    }


async def page(request: web.Request, *, status: int = 200, values: dict[str, Any] | None = None,
               errors: dict[str, str] | None = None, notice: str | None = None, test: Any = None,
               new_token: str | None = None, user_error: str | None = None, token_error: str | None = None,
               kb_error: str | None = None, desk_errors: dict[str, str] | None = None,
               hook_secret: str | None = None, business_errors: dict[str, str] | None = None) -> web.Response:
    """The settings page, with what a form just did (`notice`, or an error beside its form)."""
    stored = request.app[STORED_SETTINGS]
    repos = request.app[REPOS]
    view = await stored.view()
    doc = await repos.knowledge.get()
    done = request.query.get("done", "")
    if notice is None:
        notice = NOTICES.get(done)
    return render(
        request, "settings.html", status=status,
        view=view, values=values or view.values(), errors=errors or {}, notice=notice, test=test,
        notice_warns=done == "saved_unused",
        # Something was saved on this page, but turns run on the env values: say so next to the box.
        stored_unused=not view.use_stored and view.updated_at is not None,
        kb=knowledge_json(doc, enabled=view.kb_enabled), max_pdf_mb=MAX_PDF_BYTES // (1024 * 1024),
        users=await repos.users.all(), tokens=await repos.users.tokens(), new_token=new_token,
        user_error=user_error, token_error=token_error, kb_error=kb_error,
        desk=await settings_context(request), desk_errors=desk_errors or {}, hook_secret=hook_secret,
        limits=await limits.context(request), business_errors=business_errors or {},
    )


async def _apply(request: web.Request, checked: Validated, before: SettingsView) -> None:
    """Save, re-index the PDF if the mode changed, and write the audit log."""
    principal = principal_of(request)
    await request.app[STORED_SETTINGS].save(checked, updated_by=principal.username)
    changed = sorted(k for k, v in checked.values.items() if before.values().get(k) != v)
    if checked.key.action != "keep":
        changed.append(f"openai_api_key:{checked.key.action}")
    await request.app[REPOS].audit.record("settings_saved", detail=", ".join(changed) or "no changes",
                                          **audit_fields(request))
    if checked.values["kb_mode"] != before.kb_mode:
        await request.app[KNOWLEDGE].reindex(checked.values["kb_mode"])


@routes.post("/settings/business")
async def save_business(request: web.Request) -> web.Response:
    """Save the monthly budget, opening hours and window template (they apply whenever set)."""
    form = await request.post()
    repos = request.app[REPOS]
    checked, errors = limits.validate_business(form, await repos.business.get())
    if errors:
        return await page(request, status=400, business_errors=errors,
                          notice="Nothing was saved: please correct the fields marked below.")
    await repos.business.save(checked, updated_by=principal_of(request).username)
    request.app[STORED_SETTINGS].invalidate()
    await repos.audit.record("business_settings_saved", detail=f"budget={checked.monthly_budget}",
                             **audit_fields(request))
    raise web.HTTPSeeOther("/settings?done=business_saved#limits")


@routes.post("/settings/prices")
async def save_price(request: web.Request) -> web.Response:
    """Add or change one model's prices per million tokens."""
    price, errors = limits.validate_price(await request.post())
    if price is None:
        return await page(request, status=400, business_errors=errors,
                          notice="The price was not saved: please correct the fields marked below.")
    await request.app[REPOS].usage.set_price(price, updated_by=principal_of(request).username)
    await request.app[COSTS].refresh()
    await request.app[REPOS].audit.record("price_saved", detail=price.model, **audit_fields(request))
    raise web.HTTPSeeOther("/settings?done=price_saved#limits")


@routes.get("/settings")
async def settings_page(request: web.Request) -> web.Response:
    """The AI Assistant Settings form."""
    return await page(request)


@routes.post("/settings")
async def save_settings(request: web.Request) -> web.Response:
    """Validate and save; on errors show the form again with what was typed and a message per field."""
    form = await request.post()
    before = await request.app[STORED_SETTINGS].view()
    checked = validate(form, before, form=True)
    if checked.errors:
        return await page(request, status=400, values=checked.values, errors=checked.errors,
                           notice="Nothing was saved: please correct the fields marked below.")
    await _apply(request, checked, before)
    raise web.HTTPSeeOther("/settings?done=saved" if checked.values["use_stored"] else "/settings?done=saved_unused")


@routes.post("/settings/test")
async def test_connection(request: web.Request) -> web.Response:
    """Try the key and model as typed (nothing is saved): one models.retrieve call."""
    form = await request.post()
    stored = request.app[STORED_SETTINGS]
    before = await stored.view()
    checked = validate(form, before, form=True)
    model_error = checked.errors.get("model")
    key_error = checked.errors.get("openai_api_key")
    if model_error or key_error:
        errors = {k: v for k, v in checked.errors.items() if k in ("model", "openai_api_key")}
        return await page(request, status=400, values=checked.values, errors=errors)
    current = (await request.app[SETTINGS].current()).ai
    key = await stored.key_for_test(checked.key, use_stored=bool(checked.values["use_stored"]))
    ai = replace(current, api_key=key, model=checked.values["model"])
    result = await request.app[KEY_CHECKER].check(ai, fresh=True)
    await request.app[REPOS].audit.record("connection_tested", detail=f"ok={result.ok}", **audit_fields(request))
    return await page(request, values=checked.values, test=result)


async def _stream_upload(request: web.Request) -> tuple[str, Path] | web.Response:
    """Read the multipart upload: CSRF field first, then the PDF, written to data/kb/ with a size limit."""
    kb = request.app[KNOWLEDGE]
    reader = await request.multipart()
    first = await reader.next()
    if not isinstance(first, BodyPartReader) or first.name != CSRF_FIELD:
        return await page(request, status=403, kb_error="The form expired: reload the page and try again.")
    if not csrf_ok(principal_of(request), (await first.read(decode=True)).decode(errors="replace")):
        return await page(request, status=403, kb_error="The form expired: reload the page and try again.")
    part = await reader.next()
    while isinstance(part, BodyPartReader) and part.name != "pdf":
        await part.release()
        part = await reader.next()
    if not isinstance(part, BodyPartReader) or not part.filename:
        return await page(request, status=400, kb_error="Choose a PDF file first, then press Upload.")
    filename = part.filename
    target = kb.new_upload_path()
    size = 0
    try:
        with target.open("wb") as out:
            while chunk := await part.read_chunk(1 << 20):
                size += len(chunk)
                if size > MAX_PDF_BYTES:
                    raise KnowledgeError(
                        f"This file is larger than {MAX_PDF_BYTES // (1024 * 1024)} MB. Split it or make it "
                        "smaller (for example by saving it with lower image quality), then upload it again."
                    )
                out.write(chunk)
    except KnowledgeError as exc:
        target.unlink(missing_ok=True)
        return await page(request, status=413, kb_error=str(exc))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if size == 0:
        target.unlink(missing_ok=True)
        return await page(request, status=400, kb_error="The file is empty. Choose the PDF again.")
    return filename, target


@routes.post("/settings/knowledge")
@checks_csrf_itself
async def upload_pdf(request: web.Request) -> web.Response:
    """Upload (or replace) the knowledge base PDF; indexing continues in the background."""
    if request.content_type != "multipart/form-data":
        return await page(request, status=400, kb_error="Upload the PDF with the form on this page.")
    streamed = await _stream_upload(request)
    if isinstance(streamed, web.Response):
        return streamed
    filename, target = streamed
    view = await request.app[STORED_SETTINGS].view()
    try:
        doc = await request.app[KNOWLEDGE].replace(filename=filename, upload=target, mode=view.kb_mode)
    except KnowledgeError as exc:
        await request.app[REPOS].audit.record("knowledge_refused", detail=f"{filename}: {exc}",
                                              **audit_fields(request))
        return await page(request, status=400, kb_error=str(exc))
    pages = plural(doc.pages or 0, "page")
    await request.app[REPOS].audit.record("knowledge_uploaded", detail=f"{doc.filename} ({pages})",
                                          **audit_fields(request))
    raise web.HTTPSeeOther("/settings?done=uploaded#knowledge")


@routes.post("/settings/users")
async def add_user(request: web.Request) -> web.Response:
    """An admin adds a user with a role and a first password."""
    form = await request.post()
    username = str(form.get("username", "")).strip()
    role = str(form.get("role", "operator"))
    password = str(form.get("password", ""))
    try:
        await request.app[ACCESS].add_user(username, role, password)
    except (ValueError, UserExists) as exc:
        message = str(exc) if not isinstance(exc, UserExists) else f"There is already a user called {username}."
        return await page(request, status=400, user_error=message)
    await request.app[REPOS].audit.record("user_added", detail=f"{username} ({role})", **audit_fields(request))
    raise web.HTTPSeeOther("/settings?done=user_added#users")


@routes.post("/settings/users/{user_id:\\d{1,18}}/delete")
async def delete_user(request: web.Request) -> web.Response:
    """Remove a user (not yourself, never the last admin)."""
    user_id = int(request.match_info["user_id"])
    if user_id == principal_of(request).user_id:
        return await page(request, status=400, user_error="You cannot remove yourself while signed in.")
    if not await request.app[REPOS].users.delete(user_id):
        return await page(request, status=400, user_error="That user cannot be removed (the last admin stays).")
    await request.app[REPOS].audit.record("user_deleted", detail=str(user_id), **audit_fields(request))
    raise web.HTTPSeeOther("/settings?done=user_deleted#users")


@routes.post("/settings/tokens")
async def create_token(request: web.Request) -> web.Response:
    """Make an API token and show it once."""
    form = await request.post()
    name = str(form.get("name", ""))
    role = str(form.get("role", "operator"))
    try:
        token = await request.app[ACCESS].create_token(name, role, principal_of(request).username)
    except ValueError as exc:
        return await page(request, status=400, token_error=str(exc))
    await request.app[REPOS].audit.record("token_created", detail=f"{name.strip()} ({role})", **audit_fields(request))
    return await page(request, new_token=token,
                       notice="Token created. Copy it now: it will not be shown again.")


@routes.post("/settings/tokens/{token_id:\\d{1,18}}/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke an API token."""
    token_id = int(request.match_info["token_id"])
    if not await request.app[REPOS].users.revoke_token(token_id):
        return await page(request, status=404, token_error="No such token, or it was already revoked.")
    await request.app[REPOS].audit.record("token_revoked", detail=str(token_id), **audit_fields(request))
    raise web.HTTPSeeOther("/settings?done=token_revoked#tokens")


# JSON twin


@routes.get("/api/settings")
async def get_settings(request: web.Request) -> web.Response:
    """The settings as JSON (the key never: only whether it is set, and masked)."""
    view = await request.app[STORED_SETTINGS].view()
    doc = await request.app[REPOS].knowledge.get()
    return web.json_response(settings_json(view, doc), dumps=lambda o: orjson.dumps(o).decode())


_API_NAMES = {"use_stored_settings": "use_stored"}


@routes.put("/api/settings")
async def put_settings(request: web.Request) -> web.Response:
    """Change some or all settings; 400 with a message per field when something is wrong."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.json_response({"error": "send a JSON object"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "send a JSON object"}, status=400)
    raw: dict[str, Any] = {}
    for name, value in body.items():
        if name == "knowledge_base" and isinstance(value, dict):
            if "enabled" in value:
                raw["kb_enabled"] = value["enabled"]
            if "mode" in value:
                raw["kb_mode"] = value["mode"]
            continue
        raw[_API_NAMES.get(str(name), str(name))] = value
    allowed = {"use_stored", "openai_api_key", "model", "instructions", "client_name", "autoreply", "reaction",
               "reaction_emoji", "human_cooldown_seconds", "burst_window_ms", "kb_enabled", "kb_mode"}
    unknown = sorted(set(raw) - allowed)
    before = await request.app[STORED_SETTINGS].view()
    checked = validate(raw, before, form=False)
    errors = dict(checked.errors)
    for name in unknown:
        errors[name] = "Unknown setting."
    if errors:
        return web.json_response({"error": "invalid settings", "fields": errors}, status=400)
    await _apply(request, checked, before)
    view = await request.app[STORED_SETTINGS].view()
    doc = await request.app[REPOS].knowledge.get()
    return web.json_response(settings_json(view, doc), dumps=lambda o: orjson.dumps(o).decode())
