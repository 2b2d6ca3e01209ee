"""The composition root: one cleanup_ctx per resource, registered in dependency order.

aiohttp runs each generator's setup up to its `yield` in order at start-up, and the teardowns in
reverse at shutdown (only for those whose setup finished): the database opens first and closes
last, and the actors stop (finishing their turns) while the database and clients are still there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

import aiohttp
import structlog
from aiohttp import web

import bot
from bot.actors.admission import Admission
from bot.actors.base import Actor
from bot.actors.channels import Channels
from bot.actors.conversation import (
    ConversationActor,
    ConversationDeps,
    ConversationEvents,
    Inbound,
    Wake,
)
from bot.actors.costs import Costs
from bot.actors.ingest import Ingest
from bot.actors.media import MediaReader
from bot.actors.registry import Actors, Registry
from bot.actors.takeover import Takeover
from bot.ai.engine import AISettings, Engine, Usage
from bot.ai.keycheck import KeyChecker
from bot.ai.knowledge import KnowledgeBase
from bot.ai.language import load_profiles
from bot.backoff import Backoff
from bot.cluster.node import Node
from bot.cluster.registry import ClusterRegistry
from bot.configuration.config import Config
from bot.configuration.secrets import SecretBox
from bot.configuration.stored_settings import StoredSettings
from bot.domain.conversation import ConversationKey
from bot.integrations.webhooks import EventDelivery
from bot.observability.buildinfo import collect_build_info
from bot.observability.metrics import CountingTools, Metrics
from bot.persistence import Repositories
from bot.persistence.conversations import Conversation
from bot.persistence.crm import Contact
from bot.persistence.database import Database
from bot.persistence.postgres import PostgresDatabase
from bot.readiness import Lifecycle
from bot.tools import ToolContext, TurnActions, load_tools
from bot.web import api, auth, desk, diagnostics, guards, inbox, settings_page, webhooks
from bot.web import metrics as metrics_routes
from bot.web import orders as order_pages
from bot.web.access import Access
from bot.web.keys import (
    ACCESS,
    ADMISSION,
    BUILD,
    CLUSTER,
    CONFIG,
    COSTS,
    DATABASE,
    ENGINE,
    EVENT_DELIVERY,
    HTTP,
    INGEST,
    KEY_CHECKER,
    KNOWLEDGE,
    LIFECYCLE,
    LIVE,
    METRICS,
    REGISTRY,
    REPOS,
    SENDER,
    SETTINGS,
    STARTED_AT,
    STORED_SETTINGS,
    TAKEOVER,
    TEMPLATE_SYNC,
    TEMPLATES,
    TOOLS,
)
from bot.web.live import LiveHub
from bot.web.pages import STATIC_DIR, make_templates
from bot.whatsapp.client import WhatsAppClient
from bot.whatsapp.events import message_detail
from bot.whatsapp.sender import WhatsAppChannel
from bot.whatsapp.template_sync import TemplateSync

log = structlog.get_logger("bot.app")


def _backoff(config: Config) -> Backoff:
    return Backoff(base=config.retry_base_seconds, maximum=config.retry_max_seconds,
                   attempts=config.max_attempts, budget=config.retry_budget_seconds)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The database (SQLite in the data dir, or BOT_DATABASE_URL) and its repositories."""
    config = app[CONFIG]
    db = Database.create(config.database_url)
    await db.open()
    app[DATABASE] = db
    app[REPOS] = Repositories.on(db)
    app[REPOS].errors.listener = app[METRICS].error
    yield
    await db.close()


async def cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    """On PostgreSQL, this process is one of several: conversation locks, the bus, the shared send rate."""
    db = app[DATABASE]
    if not isinstance(db, PostgresDatabase):
        app[CLUSTER] = None
        yield
        return
    node = Node(db, send_rate=app[CONFIG].send_rate)
    await node.open()
    app[CLUSTER] = node
    live = app[LIVE]
    live.relay = node.bus.live  # what this process publishes, the others' operators see too
    node.bus.on_live = live.received
    node.on_lost(lambda: app[LIFECYCLE].shutdown())
    log.info("cluster_joined", node=node.bus.node)
    if not app[CONFIG].secret_key:
        # Fine for processes sharing one data directory; on several machines each would make its own key.
        log.warning("secret_key_per_data_dir", path=str(app[CONFIG].data_dir / "secret.key"),
                    fix="give every process the same BOT_SECRET_KEY, or they cannot read each other's secrets")
    yield
    await node.close()


async def settings_ctx(app: web.Application) -> AsyncIterator[None]:
    """What turns run with: the settings page's values over the environment's, read each turn."""
    repos = app[REPOS]
    config = app[CONFIG]
    stored = StoredSettings(config=config, repo=repos.assistant, knowledge=repos.knowledge,
                            box=SecretBox.load(config), business=repos.business)
    app[STORED_SETTINGS] = stored
    app[SETTINGS] = stored
    yield


async def clients_ctx(app: web.Application) -> AsyncIterator[None]:
    """The HTTP session for the Graph API and the OpenAI engine (with the tools it may call)."""
    config = app[CONFIG]
    metrics = app[METRICS]
    session = aiohttp.ClientSession()
    app[HTTP] = session
    node = app[CLUSTER]
    app[SENDER] = WhatsAppClient(session=session, api_base=config.whatsapp_api_base,
                                 access_token=config.whatsapp_access_token, send_rate=config.send_rate,
                                 timeout=config.graph_timeout_seconds,
                                 limiter=node.rate if node is not None else None)
    engine = Engine(tools=CountingTools(app[TOOLS], metrics), max_concurrent=config.max_concurrent_ai,
                    backoff=_backoff(config), timeout_seconds=config.openai_timeout_seconds,
                    max_tool_rounds=config.max_tool_rounds, on_model_call=metrics.model_latency.observe)
    app[ENGINE] = engine
    yield
    await engine.close()
    await session.close()


async def knowledge_ctx(app: web.Application) -> AsyncIterator[None]:
    """The PDF knowledge base; an indexing run interrupted by a stop resumes here."""
    settings_source = app[SETTINGS]
    repos = app[REPOS]

    async def ai_settings() -> AISettings:
        return (await settings_source.current()).ai

    knowledge = KnowledgeBase(store=repos.knowledge, folder=app[CONFIG].data_dir / "kb",
                              client=app[ENGINE].client, ai_settings=ai_settings,
                              on_change=app[STORED_SETTINGS].invalidate,
                              on_failure=lambda reason: repos.errors.record("kb_failed", reason),
                              exclusive=node.exclusive if (node := app[CLUSTER]) is not None else None)
    await knowledge.resume()
    app[KNOWLEDGE] = knowledge
    yield
    # Before the engine's clients close: an indexing run may be mid-call to OpenAI.
    await knowledge.close()


async def operator_web_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sign-in (the first admin is created here), the key checker and the build information."""
    access = Access(users=app[REPOS].users, config=app[CONFIG])
    await access.ensure_admin()
    app[ACCESS] = access
    app[KEY_CHECKER] = KeyChecker(client=app[ENGINE].client)
    app[BUILD] = await collect_build_info(app[CONFIG], started_at=app[STARTED_AT])
    yield


def _conversation_deps(app: web.Application) -> ConversationDeps:
    config, repos, metrics, live = app[CONFIG], app[REPOS], app[METRICS], app[LIVE]
    engine, settings_source = app[ENGINE], app[SETTINGS]

    def tool_context(key: ConversationKey, conv: Conversation, contact: Contact, language: str | None,
                     actions: TurnActions) -> ToolContext:
        return ToolContext(contact=contact, session_id=conv.session_id, language=language, repos=repos,
                           clock=time.time, conversation_key=key, config=config, actions=actions)

    async def transcribe(data: bytes, mime: str, filename: str) -> str:
        current = await settings_source.current()
        return await engine.transcribe(current.ai, data, mime, filename, config.transcription_model)

    def sent(key: ConversationKey, author: str) -> None:
        if not key.is_local:  # test chats stay out of the WhatsApp counts
            metrics.messages_out.labels(author=author).inc()
        live.publish("message", conversation=key.customer, author=author)

    def turn_finished(outcome: str, seconds: float) -> None:
        metrics.turn_latency.labels(outcome=outcome).observe(seconds)
        live.publish("conversation", change=outcome)

    def model_used(model: str, usage: Usage, cost: float) -> None:
        for kind, tokens in (("input", usage.input_tokens), ("cached", usage.cached_tokens),
                             ("output", usage.output_tokens)):
            metrics.model_tokens.labels(model=model, kind=kind).inc(tokens)
        metrics.model_cost.labels(model=model).inc(cost)

    events = ConversationEvents(
        turn_finished=turn_finished,
        model_used=model_used,
        sent=sent,
        send_failed=lambda code: metrics.send_failures.labels(code=str(code or "network")).inc(),
        changed=lambda key, what: live.publish("conversation", conversation=key.customer, change=what),
    )
    return ConversationDeps(
        repos=repos,
        engine=engine,
        channels=Channels(whatsapp=WhatsAppChannel(app[SENDER])),
        media=MediaReader(source=app[SENDER], transcribe=transcribe),
        settings=settings_source,
        admission=app[ADMISSION],
        costs=app[COSTS],
        tool_context=tool_context,
        backoff=_backoff(config),
        idle_seconds=config.actor_idle_seconds,
        events=events,
        detail_of=message_detail,
        shared=app[CLUSTER] is not None,
    )


async def costs_ctx(app: web.Application) -> AsyncIterator[None]:
    """Prices and spend totals, re-read every 30 s (other processes spend too); the budget's verdict."""
    costs = Costs(app[REPOS].usage)
    await costs.refresh()
    app[COSTS] = costs
    app[METRICS].bind_spend(lambda: costs.today, lambda: costs.month)
    task = asyncio.get_running_loop().create_task(costs.run(), name="costs-refresh")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


async def actors_ctx(app: web.Application) -> AsyncIterator[None]:
    """The conversation actors, the ingest that feeds them, and the start-up replay."""
    config, repos = app[CONFIG], app[REPOS]
    # First-use costs paid before the first webhook, not by the event loop under the first customers.
    await asyncio.to_thread(load_profiles)
    await app[ENGINE].warm_up((await app[SETTINGS].current()).ai)
    app[ADMISSION] = Admission(config.max_concurrent_turns)
    deps = _conversation_deps(app)

    def factory(key: ConversationKey, on_exit: Callable[[Actor[ConversationKey]], None]) -> ConversationActor:
        return ConversationActor(key, deps, on_exit)

    local: Registry[ConversationKey] = Registry(factory)
    node = app[CLUSTER]
    cluster = ClusterRegistry(local, db=repos.db, ownership=node.ownership, bus=node.bus) if node else None
    registry: Actors = cluster or local
    app[REGISTRY] = registry
    app[INGEST] = Ingest(db=repos.db, tell=registry.tell, metrics=app[METRICS], notify=app[LIVE].publish,
                         acked=app[ADMISSION].acked, owns=cluster.owns if cluster else None)
    app[TAKEOVER] = Takeover(repos=repos, tell=registry.tell)
    app[METRICS].bind_gauges(lambda: registry.live)
    if node is not None and cluster is not None:
        # Several processes: no global replay. Each conversation's leftovers (interrupted sends marked
        # `unknown`, queued sends, commands, pending messages) are picked up by whoever takes its lock,
        # so two processes starting together never answer the same message twice.
        node.on_lost(cluster.give_up)
        node.on_lost(app[ADMISSION].close)
        cluster.start()
        taken = await cluster.sweep(grace=0.0)
        log.info("server_started", mode="cluster", conversations_taken=taken)
    else:
        # Start-up replay: sends interrupted mid-flight are never repeated; queued sends and commands
        # are picked up by their actors; pending customer messages are told again in arrival order.
        interrupted = await repos.outbox.interrupted_to_unknown()
        for key in {*await repos.outbox.queued_conversations(), *await repos.commands.waiting()}:
            registry.tell(key, Wake())
        pending = await repos.inbox.pending()
        for row in pending:
            registry.tell(row.key, Inbound(row.stored(message_detail)))
        log.info("server_started", replayed=len(pending), interrupted_sends=interrupted)
    yield
    await app[INGEST].close()  # POSTs already received are stored (and told) before the actors stop
    # Drain: turns under way finish (within the timeout); those still waiting for a slot do not begin.
    app[ADMISSION].close()
    await registry.stop_all(config.shutdown_timeout_seconds)


async def event_delivery_ctx(app: web.Application) -> AsyncIterator[None]:
    """Outbound event webhooks: the worker that delivers the events table to the configured endpoints."""
    config, repos = app[CONFIG], app[REPOS]
    delivery = EventDelivery(
        repo=repos.webhooks, session=app[HTTP], box=SecretBox.load(config),
        backoff=Backoff(base=config.retry_base_seconds, maximum=3600.0, attempts=config.max_attempts),
        # On PostgreSQL an event id can commit after a higher one: the fan-out stays a moment behind.
        user_agent=f"bot/{bot.__version__}",
    )
    app[EVENT_DELIVERY] = delivery
    delivery.start()
    yield
    await delivery.stop()


async def template_sync_ctx(app: web.Application) -> AsyncIterator[None]:
    """The WABA's message templates: synced at start (in the background), every hour, and on demand."""
    job = TemplateSync(source=app[SENDER], store=app[REPOS].templates,
                       waba_id=app[CONFIG].whatsapp_business_account_id)
    app[TEMPLATE_SYNC] = job
    job.start()
    yield
    await job.stop()


async def close_live_streams(app: web.Application) -> None:
    """Open event streams would otherwise hold the shutdown until their keep-alive timeout."""
    app[LIFECYCLE].draining = True  # /healthz says so: a load balancer sends the next requests elsewhere
    app[LIVE].close()


def build_app(config: Config) -> web.Application:
    """The aiohttp application: state, middlewares, resources in dependency order, routes."""
    app = web.Application(client_max_size=webhooks.MAX_BODY)
    app[CONFIG] = config
    app[STARTED_AT] = time.time()
    app[LIFECYCLE] = Lifecycle()
    app[METRICS] = Metrics()
    app[LIVE] = LiveHub()
    app[TEMPLATES] = make_templates()
    # Tools are discovered now, before any resource opens: a duplicate tool name stops start-up here.
    # They reach the database only through the ToolContext of each turn.
    app[TOOLS] = load_tools(config)
    # Bodies that stall or cannot be decoded are refused first, before the sign-in check reads a form.
    guards.install(app)
    # Default deny: every request passes the sign-in check before any handler (public routes excepted).
    app.middlewares.append(auth.auth_middleware)
    app.on_shutdown.append(close_live_streams)
    app.cleanup_ctx.extend([database_ctx, cluster_ctx, settings_ctx, clients_ctx, knowledge_ctx, operator_web_ctx,
                            costs_ctx, actors_ctx])
    # After the actors: both jobs stop first at shutdown, while the database and HTTP session are still open.
    app.cleanup_ctx.extend([event_delivery_ctx, template_sync_ctx])
    for module in (webhooks, api, order_pages, metrics_routes, inbox, auth, settings_page, diagnostics, desk):
        app.add_routes(module.routes)
    app.router.add_static("/static", STATIC_DIR)
    return app
