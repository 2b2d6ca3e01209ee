"""Meta's webhook: verify, parse, persist, tell, answer 200. Nothing slow happens here."""

from __future__ import annotations

import asyncio
import hmac
import os

import orjson
import structlog
from aiohttp import web

from bot.persistence.database import DatabaseUnavailable
from bot.web.keys import CLUSTER, CONFIG, DATABASE, INGEST, LIFECYCLE, REGISTRY
from bot.whatsapp.events import PayloadError, parse_webhook
from bot.whatsapp.signature import signature_valid

log = structlog.get_logger("bot.webhook")

routes = web.RouteTableDef()

MAX_BODY = 8 * 1024 * 1024


@routes.get("/webhooks/whatsapp")
async def verify(request: web.Request) -> web.Response:
    """The subscription handshake: echo hub.challenge when the verify token matches."""
    config = request.app[CONFIG]
    mode = request.query.get("hub.mode", "")
    token = request.query.get("hub.verify_token", "")
    challenge = request.query.get("hub.challenge", "")
    if (
        mode == "subscribe"
        and config.whatsapp_verify_token
        and hmac.compare_digest(token.encode(), config.whatsapp_verify_token.encode())
        and challenge
    ):
        return web.Response(text=challenge)
    log.warning("webhook_verification_refused", mode=mode, token_given=bool(token))
    return web.Response(status=403, text="verification failed: check WHATSAPP_VERIFY_TOKEN")


@routes.post("/webhooks/whatsapp")
async def receive(request: web.Request) -> web.Response:
    """Signed event delivery; 200 only after every message is in the inbox."""
    config = request.app[CONFIG]
    if request.content_length is not None and request.content_length > MAX_BODY:
        return web.json_response({"error": "body too large"}, status=413)
    body = await request.read()
    header = request.headers.get("X-Hub-Signature-256")
    if not header:
        log.warning("webhook_signature_missing")
        return web.json_response({"error": "missing X-Hub-Signature-256"}, status=401)
    if not signature_valid(body, header, config.whatsapp_app_secret):
        log.warning("webhook_signature_rejected")
        return web.json_response({"error": "invalid signature"}, status=403)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return web.json_response({"error": "body is not valid JSON"}, status=400)
    try:
        batch = parse_webhook(payload)
    except PayloadError as exc:
        return web.json_response({"error": f"not a WhatsApp webhook payload: {exc}"}, status=400)
    if batch.skipped:  # the rest of the POST is still stored: only these items are lost, so say which and why
        log.warning("webhook_items_skipped", count=len(batch.skipped), skipped=batch.skipped[:20])
    try:
        await request.app[INGEST].accept(batch)
    except DatabaseUnavailable as exc:
        # Not acknowledged, so Meta retries later; nothing acknowledged earlier is affected.
        log.error("webhook_storage_unavailable", error=str(exc))
        return web.json_response({"error": "storage unavailable, retry later"}, status=503)
    except Exception as exc:  # this POST alone (the others stored with it were stored again without it)
        log.exception("webhook_storage_failed", error=str(exc)[:300])
        return web.json_response({"error": f"this delivery could not be stored: {type(exc).__name__}"}, status=500)
    return web.Response(text="ok")


HEALTH_DB_TIMEOUT_SECONDS = 5.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Readiness: 200 while the database answers and this process takes work, 503 with the reasons otherwise.

    A load balancer sends requests only to ready processes; a draining or cut-off process says so.
    """
    app = request.app
    reasons: list[str] = []
    if app[LIFECYCLE].draining:
        reasons.append("shutting down: finishing its turns and taking no new work")
    node = app.get(CLUSTER)
    if node is not None and node.lost:
        reasons.append("lost its conversation locks (the connection holding them closed): restarting")
    db = app[DATABASE]
    try:
        await asyncio.wait_for(db.fetchval("SELECT 1"), HEALTH_DB_TIMEOUT_SECONDS)
    except Exception as exc:  # any failure means "not reachable", said in words
        reasons.append(f"database not reachable: {type(exc).__name__}: {exc}"[:300])
    registry = app.get(REGISTRY)
    body = {
        "status": "ok" if not reasons else "unavailable",
        "ready": not reasons,
        "database": db.dialect,
        "mode": "cluster" if node is not None else "single",
        "pid": os.getpid(),  # which process answered, behind a load balancer
        "live_conversations": registry.live if registry is not None else 0,
        "reasons": reasons,
    }
    return web.json_response(body, status=200 if not reasons else 503, headers={"Cache-Control": "no-store"})
