"""HTML pages: the jinja2 environment (autoescaped) and one render helper that fills in the common parts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

import bot
from bot.texts import plural
from bot.web.keys import COSTS, SETTINGS, TEMPLATES, USER


def _when(timestamp: float | None) -> str:
    """A time as a person reads it: local date and time, and how long ago."""
    if not timestamp:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))
    return f"{stamp} ({_ago(timestamp)})"


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    seconds = max(0, int(time.time() - timestamp))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{plural(seconds // 86400, 'day')} ago"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def make_templates() -> jinja2.Environment:
    """The page templates in bot/web/templates, always autoescaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bot.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["duration"] = _duration
    env.filters["plural"] = plural  # {{ n | plural("page") }}: "1 page", "2 pages"
    return env


async def budget_banner(app: web.Application) -> str | None:
    """The banner every operator page shows while the monthly model budget is reached."""
    budget = (await app[SETTINGS].current()).monthly_budget
    costs = app.get(COSTS)
    if costs is None or not costs.over(budget):
        return None
    return (f"The monthly budget for the AI ({budget:,.2f}) is reached: the assistant no longer answers and "
            "customers are told a person will. Raise it on the settings page, or answer them from here.")


def render(request: web.Request, template: str, *, status: int = 200,
           headers: Mapping[str, str] | None = None, **context: Any) -> web.Response:
    """Render a page with the signed-in user, their CSRF token and the nav bar filled in."""
    user = request.get(USER)
    context.setdefault("banner", None)
    page = request.app[TEMPLATES].get_template(template).render(
        user=user,
        csrf_token=user.csrf_token if user is not None and user.csrf_token else "",
        path=request.path,
        version=bot.__version__,
        **context,
    )
    response = web.Response(text=page, status=status, content_type="text/html", headers=headers)
    # Operator pages hold customer data and one-time secrets: never cache, never frame.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    # Scripts and styles come only from /static (no inline code), so injected markup cannot run.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return response


STATIC_DIR = Path(__file__).resolve().parent / "static"
