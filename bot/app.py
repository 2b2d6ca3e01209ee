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
from bot.ai.engine import AISettings, Engine, ToolRunner
from bot.ai.keycheck import KeyChecker
from bot.ai.knowledge import KnowledgeBase
from bot.backoff import Backoff
from bot.buildinfo import collect_build_info
from bot.config import Config
from bot.metrics import CountingTools, Metrics
from bot.persistence import Repositories
from bot.persistence.conversations import Conversation
from bot.persistence.db import Database
from bot.persistence.outbox import OutboxRow
from bot.secrets import SecretBox
from bot.settings import SettingsSource
from bot.stored_settings import StoredSettings
from bot.tools import ToolContext, ToolRegistry, context_for, load_tools
from bot.web import api, auth, diagnostics, guards, inbox, settings_page, webhooks
from bot.web import metrics as metrics_routes
from bot.web import orders as order_pages
from bot.web.access import Access
from bot.web.keys import (
    ACCESS,
    BUILD,
    CONFIG,
    DATABASE,
    ENGINE,
    HTTP,
    INGEST,
    KEY_CHECKER,
    KNOWLEDGE,
    LIVE,
    METRICS,
    OUTBOUND,
    REGISTRY,
    REPOS,
    SENDER,
    SETTINGS,
    STARTED_AT,
    STORED_SETTINGS,
    TAKEOVER,
    TEMPLATES,
    TOOLS,
)
from bot.web.live import LiveHub
from bot.web.pages import STATIC_DIR, make_templates
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
    backoff = Backoff(base=config.retry_base_seconds, maximum=config.retry_max_seconds,
                      attempts=config.max_attempts, budget=config.retry_budget_seconds)
    app[METRICS] = metrics
    live = LiveHub()
    app[LIVE] = live

    async def close_live_streams(app: web.Application) -> None:
        # Open event streams would otherwise hold the shutdown until their keep-alive timeout.
        live.close()

    app.on_shutdown.append(close_live_streams)
    app[TEMPLATES] = make_templates()
    # Bodies that stall or cannot be decoded are refused first, before the sign-in check reads a form.
    guards.install(app)
    # Default deny: every request passes the sign-in check before any handler (public routes excepted).
    app.middlewares.append(auth.auth_middleware)
    # Tools are discovered now, before any resource opens: a duplicate tool name stops start-up
    # here, and the engine (clients_ctx) needs them before the database-backed actors exist.
    # They reach the database only through the ToolContext of each turn.
    if tools is None:
        tools = load_tools(config)
    tool_runner: ToolRunner = CountingTools(tools, metrics)
    app[TOOLS] = tools if isinstance(tools, ToolRegistry) else ToolRegistry()

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        db = Database(config.db_path)
        await db.open()
        app[DATABASE] = db
        app[REPOS] = Repositories.on(db)
        app[REPOS].errors.listener = metrics.error
        yield
        await db.close()

    async def settings_ctx(app: web.Application) -> AsyncIterator[None]:
        # The settings page's values (over env ones when ticked) are the default source; tests may inject one.
        repos = app[REPOS]
        stored = StoredSettings(config=config, repo=repos.assistant, knowledge=repos.knowledge,
                                box=SecretBox.load(config))
        app[STORED_SETTINGS] = stored
        app[SETTINGS] = settings if settings is not None else stored
        yield

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
            backoff=backoff,
            timeout_seconds=config.openai_timeout_seconds,
            max_tool_rounds=config.max_tool_rounds,
            on_model_call=metrics.model_latency.observe,
        )
        app[ENGINE] = engine
        yield
        await engine.close()
        await session.close()

    async def knowledge_ctx(app: web.Application) -> AsyncIterator[None]:
        settings_source = app[SETTINGS]

        async def ai_settings() -> AISettings:
            return (await settings_source.current()).ai

        knowledge = KnowledgeBase(store=app[REPOS].knowledge, folder=config.data_dir / "kb",
                                  client=app[ENGINE].client, ai_settings=ai_settings,
                                  on_change=app[STORED_SETTINGS].invalidate,
                                  on_failure=lambda reason: app[REPOS].errors.record("kb_failed", reason))
        await knowledge.resume()
        app[KNOWLEDGE] = knowledge
        yield
        # Before the engine's clients close: an indexing run may be mid-call to OpenAI.
        await knowledge.close()

    async def operator_web_ctx(app: web.Application) -> AsyncIterator[None]:
        access = Access(users=app[REPOS].users, config=config)
        await access.ensure_admin()
        app[ACCESS] = access
        app[KEY_CHECKER] = KeyChecker(client=app[ENGINE].client)
        app[BUILD] = await collect_build_info(config, started_at=app[STARTED_AT])
        yield

    async def actors_ctx(app: web.Application) -> AsyncIterator[None]:
        repos = app[REPOS]
        settings_source = app[SETTINGS]

        async def tool_context(conv: Conversation, language: str | None) -> ToolContext:
            # Ensures the conversation's CRM contact (named from the WhatsApp profile) on every AI turn.
            return await context_for(conv, language, repos=repos, config=config, handoff=app[TAKEOVER])

        def reply_sent(row: OutboxRow, conv: Conversation) -> None:
            if not conv.is_test:  # test chats stay out of the WhatsApp counts
                metrics.messages_out.labels(author=row.author).inc()
            live.publish("message", conversation=conv.customer_id, author=row.author)

        def turn_finished(outcome: str, seconds: float) -> None:
            metrics.turn_latency.labels(outcome=outcome).observe(seconds)
            live.publish("conversation", change=outcome)

        outbound = Outbound(
            repos=repos,
            sender=app[SENDER],
            backoff=backoff,
            on_sent=reply_sent,
            on_failed=lambda code: metrics.send_failures.labels(code=str(code or "network")).inc(),
        )
        takeover = Takeover(
            repos=repos, outbound=outbound, settings=settings_source,
            notify=lambda what, conv: live.publish("conversation", conversation=conv.customer_id, change=what),
        )
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
            backoff=backoff,
            idle_seconds=config.actor_idle_seconds,
            on_turn=turn_finished,
        )

        def factory(key: ConversationKey, on_exit: Any) -> Actor[ConversationKey]:
            return ConversationActor(key, deps, on_exit)

        registry: Registry[ConversationKey] = Registry(factory)
        app[REGISTRY] = registry
        app[INGEST] = Ingest(repos=repos, tell=registry.tell, on_echoes=takeover.echoes, metrics=metrics,
                             notify=live.publish)
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

    app.cleanup_ctx.extend([database_ctx, settings_ctx, clients_ctx, knowledge_ctx, operator_web_ctx, actors_ctx])
    app.add_routes(webhooks.routes)
    app.add_routes(api.routes)
    app.add_routes(order_pages.routes)
    app.add_routes(metrics_routes.routes)
    app.add_routes(inbox.routes)
    app.add_routes(auth.routes)
    app.add_routes(settings_page.routes)
    app.add_routes(diagnostics.routes)
    app.router.add_static("/static", STATIC_DIR)
    return app
