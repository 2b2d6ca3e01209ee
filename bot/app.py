"""The composition root: build every part, wire them with constructor arguments, one cleanup_ctx each."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from bot.actors.base import Actor
from bot.actors.conversation import ConversationActor, ConversationDeps, ConversationKey, Flush, Inbound
from bot.actors.ingest import Ingest
from bot.actors.media import MediaReader
from bot.actors.outbound import Outbound
from bot.actors.registry import Registry
from bot.actors.takeover import Takeover
from bot.ai.engine import Engine, NoTools, ToolRunner
from bot.config import Config
from bot.metrics import Metrics
from bot.persistence import Repositories
from bot.persistence.conversations import Conversation
from bot.persistence.db import Database
from bot.settings import EnvSettings, SettingsSource
from bot.web import api, webhooks
from bot.web import metrics as metrics_routes
from bot.web.keys import (
    CONFIG,
    DATABASE,
    ENGINE,
    HTTP,
    INGEST,
    METRICS,
    OUTBOUND,
    REGISTRY,
    REPOS,
    SENDER,
    STARTED_AT,
    TAKEOVER,
)
from bot.whatsapp.client import WhatsAppClient

log = structlog.get_logger("bot.app")



def build_app(
    config: Config, *, settings: SettingsSource | None = None, tools: ToolRunner | None = None
) -> web.Application:
    """Build the aiohttp application. Resources open in cleanup_ctx order and close in reverse."""
    app = web.Application(client_max_size=webhooks.MAX_BODY)
    app[CONFIG] = config
    app[STARTED_AT] = time.time()
    metrics = Metrics()
    app[METRICS] = metrics
    settings_source = settings or EnvSettings(config)
    tool_runner: ToolRunner = tools or NoTools()

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        db = Database(config.db_path)
        await db.open()
        app[DATABASE] = db
        app[REPOS] = Repositories.on(db)
        app[REPOS].errors.listener = metrics.error
        yield
        await db.close()

    async def clients_ctx(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession()
        app[HTTP] = session
        app[SENDER] = WhatsAppClient(
            session=session,
            api_base=config.whatsapp_api_base,
            access_token=config.whatsapp_access_token,
            send_rate=config.send_rate,
            timeout=config.graph_timeout_seconds,
        )
        engine = Engine(
            tools=tool_runner,
            max_concurrent=config.max_concurrent_ai,
            max_attempts=config.max_attempts,
            retry_base_seconds=config.retry_base_seconds,
            retry_max_seconds=config.retry_max_seconds,
            timeout_seconds=config.openai_timeout_seconds,
            max_tool_rounds=config.max_tool_rounds,
            on_model_call=metrics.model_latency.observe,
        )
        app[ENGINE] = engine
        yield
        await engine.close()
        await session.close()

    async def actors_ctx(app: web.Application) -> AsyncIterator[None]:
        repos = app[REPOS]

        async def tool_context(conv: Conversation, language: str | None) -> Any:
            return None

        outbound = Outbound(
            repos=repos,
            sender=app[SENDER],
            max_attempts=config.max_attempts,
            retry_base_seconds=config.retry_base_seconds,
            retry_max_seconds=config.retry_max_seconds,
            on_sent=lambda row, conv: metrics.messages_out.labels(author=row.author).inc(),
            on_failed=lambda code: metrics.send_failures.labels(code=str(code or "network")).inc(),
        )
        takeover = Takeover(repos=repos, outbound=outbound, settings=settings_source)
        app[OUTBOUND] = outbound
        app[TAKEOVER] = takeover
        engine = app[ENGINE]

        async def transcribe(data: bytes, mime: str, filename: str) -> str:
            current = await settings_source.current()
            return await engine.transcribe(current.ai, data, mime, filename, config.transcription_model)

        deps = ConversationDeps(
            repos=repos,
            engine=engine,
            outbound=outbound,
            media=MediaReader(source=app[SENDER], transcribe=transcribe),
            takeover=takeover,
            settings=settings_source,
            tool_context=tool_context,
            max_attempts=config.max_attempts,
            retry_base_seconds=config.retry_base_seconds,
            retry_max_seconds=config.retry_max_seconds,
            idle_seconds=config.actor_idle_seconds,
            on_turn=lambda outcome, seconds: metrics.turn_latency.labels(outcome=outcome).observe(seconds),
        )

        def factory(key: ConversationKey, on_exit: Any) -> Actor[ConversationKey]:
            return ConversationActor(key, deps, on_exit)

        registry: Registry[ConversationKey] = Registry(factory)
        app[REGISTRY] = registry
        app[INGEST] = Ingest(repos=repos, tell=registry.tell, on_echoes=takeover.echoes, metrics=metrics)
        metrics.bind_gauges(lambda: registry.live)
        # Start-up replay: sends interrupted mid-flight are never repeated; queued sends go out;
        # pending customer messages are told again in arrival order.
        interrupted = await repos.outbox.interrupted_to_unknown()
        for key in await repos.outbox.queued_conversations():
            registry.tell(key, Flush())
        pending = await repos.inbox.pending()
        for row in pending:
            registry.tell((row.phone_number_id, row.customer_id), Inbound(row.id))
        log.info("server_started", replayed=len(pending), interrupted_sends=interrupted)
        yield
        await registry.stop_all(config.shutdown_timeout_seconds)

    app.cleanup_ctx.extend([database_ctx, clients_ctx, actors_ctx])
    app.add_routes(webhooks.routes)
    app.add_routes(api.routes)
    app.add_routes(metrics_routes.routes)
    return app
