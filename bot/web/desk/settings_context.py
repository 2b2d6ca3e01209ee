"""What the settings page shows of the desk: canned replies, event webhooks and the template sync."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.persistence.events import KINDS
from bot.web.keys import REPOS, TEMPLATE_SYNC


async def settings_context(request: web.Request) -> dict[str, Any]:
    """The desk's parts of the settings page, as plain data for the template."""
    repos = request.app[REPOS]
    stats = await repos.webhooks.stats()
    sync = request.app[TEMPLATE_SYNC]
    empty = {"pending": 0, "failed": 0, "delivered": 0, "last_attempt_at": None}
    return {
        "canned": await repos.canned.all(),
        "event_kinds": KINDS,
        "hooks": [{"endpoint": e, **stats.get(e.id, empty)} for e in await repos.webhooks.endpoints()],
        "hook_failures": await repos.webhooks.recent_failures(10),
        "templates": {
            "waba_id": sync.waba_id, "synced_at": sync.synced_at, "count": sync.count, "error": sync.error,
            "problem": sync.problem, "stored": len(await repos.templates.all(waba_id=sync.waba_id or None)),
        },
    }
