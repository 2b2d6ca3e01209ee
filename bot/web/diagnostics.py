"""/ai-diagnostics and GET /api/diagnostics: is the assistant healthy, and what has it been doing?

Every view of either is written to the audit log with the user and IP; only admins see that log.
"Reset Sessions" (admins only) forgets every response chain and session mapping (contacts and
orders stay).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import orjson
import structlog
from aiohttp import web

from bot import readiness
from bot.actors.conversation import Reload
from bot.actors.costs import month_of
from bot.configuration.secrets import mask
from bot.texts import plural
from bot.web.auth import audit_fields, principal_of
from bot.web.keys import (
    BUILD,
    CONFIG,
    COSTS,
    DATABASE,
    KEY_CHECKER,
    REGISTRY,
    REPOS,
    SETTINGS,
    STORED_SETTINGS,
    TOOLS,
)
from bot.web.pages import budget_banner, render
from bot.web.settings_page import knowledge_json

log = structlog.get_logger("bot.web.diagnostics")

routes = web.RouteTableDef()

ERROR_WINDOW_SECONDS = 2 * 3600
TRAFFIC_WINDOW_SECONDS = 24 * 3600
ACCESS_WINDOW_SECONDS = 7 * 24 * 3600
ACCESS_ACTIONS = ("view_diagnostics", "api_diagnostics")


async def collect(app: web.Application, *, audit: bool) -> dict[str, Any]:
    """Everything the page shows, as plain data (the JSON twin returns exactly this).

    `audit`: include who opened the diagnostics and the recent activity (users and IPs): admins only.
    """
    repos = app[REPOS]
    build = app[BUILD]
    current = await app[SETTINGS].current()
    view = await app[STORED_SETTINGS].view()
    # One real call at most every few minutes per key and model: the checker caches its answer.
    check = await app[KEY_CHECKER].check(current.ai)
    doc = await repos.knowledge.get()
    sessions = await repos.stats.sessions()
    traffic = await repos.stats.traffic(TRAFFIC_WINDOW_SECONDS)
    registry = app.get(REGISTRY)
    tools = app.get(TOOLS)
    data: dict[str, Any] = {
        "readiness": [asdict(p) for p in await readiness.check(app[CONFIG], app[STORED_SETTINGS])],
        "code": {
            "version": build.version,
            "commit": build.commit,
            "commit_source": build.commit_source,
            "started_at": build.started_at,
            "uptime_seconds": round(time.time() - build.started_at),
            "migrations": list(app[DATABASE].applied_migrations),
        },
        "openai": {
            "api_key_set": bool(current.ai.api_key),
            "api_key_masked": mask(current.ai.api_key),
            "api_key_source": view.openai_api_key_source,
            "api_key_problem": view.openai_api_key_problem,
            "key_valid": check.ok,
            "key_check": check.message,
            "checked_at": check.checked_at,
            "base_url": current.ai.base_url,
        },
        "settings": {
            "use_stored_settings": view.use_stored,
            "autoreply": current.autoreply,
            "reaction": current.reaction,
            "reaction_emoji": current.reaction_emoji,
            "human_cooldown_seconds": current.human_cooldown_seconds,
            "burst_window_ms": current.burst_window_ms,
            "model": current.ai.model,
            "client_name": current.ai.client_name,
            "knowledge_base": {**knowledge_json(doc, enabled=view.kb_enabled),
                               "file_search_active": any(t.get("type") == "file_search"
                                                         for t in current.ai.extra_tools)},
        },
        "sessions": {
            "live_actors": registry.live if registry is not None else 0,
            "stored": sessions.stored,
            "paused": sessions.paused,
            "needs_human": sessions.needs_human,
        },
        "whatsapp_24h": {
            "incoming": traffic.incoming,
            "outgoing": traffic.outgoing,
            "failed_by_code": traffic.failed_by_code,
            "failed": sum(traffic.failed_by_code.values()),
            "last_inbound_at": traffic.last_inbound_at,
            "last_outbound_at": traffic.last_outbound_at,
        },
        "costs": await _costs(app, current.monthly_budget),
        "recent_errors": await repos.errors.recent(ERROR_WINDOW_SECONDS),
        "tool_load_errors": [{"module": e.module, "error": e.error} for e in (tools.load_errors if tools else [])],
    }
    if audit:
        data["recent_accesses"] = await repos.audit.accesses(ACCESS_ACTIONS, ACCESS_WINDOW_SECONDS)
        data["recent_activity"] = await repos.audit.recent(20)
    return data


async def _costs(app: web.Application, budget: float | None) -> dict[str, Any]:
    costs = app[COSTS]
    month = month_of(time.time())
    return {"today": round(costs.today, 6), "month": round(costs.month, 6), "budget": budget,
            "budget_reached": costs.over(budget),
            "by_model": await app[REPOS].usage.by_model(month), "since": month}


@routes.get("/ai-diagnostics")
async def diagnostics_page(request: web.Request) -> web.Response:
    """The diagnostics page (the view is recorded in the access log)."""
    await request.app[REPOS].audit.record("view_diagnostics", **audit_fields(request))
    data = await collect(request.app, audit=principal_of(request).is_admin)
    reset = request.query.get("reset")
    notice = None
    if reset and reset.isdigit():
        count = int(reset)
        notice = f"Sessions reset: {plural(count, 'conversation')} {'starts' if count == 1 else 'start'} afresh."
    return render(request, "diagnostics.html", d=data, notice=notice, error=None,
                  banner=await budget_banner(request.app))


@routes.get("/api/diagnostics")
async def diagnostics_json(request: web.Request) -> web.Response:
    """The diagnostics as JSON (the access is recorded too)."""
    await request.app[REPOS].audit.record("api_diagnostics", **audit_fields(request))
    data = await collect(request.app, audit=principal_of(request).is_admin)
    return web.json_response(data, dumps=lambda o: orjson.dumps(o).decode())


@routes.post("/ai-diagnostics/reset-sessions")
async def reset_sessions(request: web.Request) -> web.Response:
    """Forget every response chain and session mapping; needs confirm=yes (the page also asks in JS).

    Admins only: the sign-in middleware refuses everyone else.
    """
    form = await request.post()
    if form.get("confirm") != "yes":
        data = await collect(request.app, audit=True)
        return render(request, "diagnostics.html", status=400, d=data, notice=None,
                      error="Nothing was reset: tick “Yes, reset every session” to confirm.")
    count = await request.app[REPOS].conversations.reset_sessions()
    request.app[REGISTRY].tell_all(Reload())  # live actors drop the chains they hold in memory
    await request.app[REPOS].audit.record("sessions_reset", detail=plural(count, "conversation"),
                                          **audit_fields(request))
    log.warning("sessions_reset", count=count, user=principal_of(request).username)
    raise web.HTTPSeeOther(f"/ai-diagnostics?reset={count}")
