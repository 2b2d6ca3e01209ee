"""GET /metrics: Prometheus text format (bearer token only, enforced by the auth middleware)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.web.keys import METRICS, REPOS

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Scrape endpoint; the inbox depth is read from the database at scrape time."""
    registry = request.app[METRICS]
    registry.inbox_pending.set(await request.app[REPOS].inbox.pending_count())
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
