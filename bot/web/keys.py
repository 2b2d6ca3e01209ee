"""Typed application state keys (aiohttp AppKey), the only way handlers reach shared parts."""

from __future__ import annotations

import aiohttp
import jinja2
from aiohttp import web

from bot.actors.admission import Admission
from bot.actors.costs import Costs
from bot.actors.ingest import Ingest
from bot.actors.registry import Actors
from bot.actors.takeover import Takeover
from bot.ai.engine import Engine
from bot.ai.keycheck import KeyChecker
from bot.ai.knowledge import KnowledgeBase
from bot.cluster.node import Node
from bot.configuration.config import Config
from bot.configuration.settings import SettingsSource
from bot.configuration.stored_settings import StoredSettings
from bot.integrations.webhooks import EventDelivery
from bot.observability.buildinfo import BuildInfo
from bot.observability.metrics import Metrics
from bot.persistence import Repositories
from bot.persistence.database import Database
from bot.readiness import Lifecycle
from bot.tools.registry import ToolRegistry
from bot.web.access import Access, Principal
from bot.web.live import LiveHub
from bot.whatsapp.client import WhatsAppClient
from bot.whatsapp.template_sync import TemplateSync

CONFIG = web.AppKey("config", Config)
STARTED_AT = web.AppKey("started_at", float)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
METRICS = web.AppKey("metrics", Metrics)
DATABASE = web.AppKey("database", Database)
CLUSTER = web.AppKey[Node | None]("cluster")  # None in the embedded, one-process mode
REPOS = web.AppKey("repos", Repositories)
HTTP = web.AppKey("http", aiohttp.ClientSession)
SENDER = web.AppKey("sender", WhatsAppClient)
ENGINE = web.AppKey("engine", Engine)
REGISTRY = web.AppKey[Actors]("registry")  # the local Registry, or the cluster's
INGEST = web.AppKey("ingest", Ingest)
ADMISSION = web.AppKey("admission", Admission)
COSTS = web.AppKey("costs", Costs)
TAKEOVER = web.AppKey("takeover", Takeover)
TOOLS = web.AppKey("tools", ToolRegistry)
LIVE = web.AppKey("live", LiveHub)
# Operator web (sign-in, settings page, knowledge base, diagnostics)
SETTINGS = web.AppKey[SettingsSource]("settings")  # what turns run with
STORED_SETTINGS = web.AppKey("stored_settings", StoredSettings)
ACCESS = web.AppKey("access", Access)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
KNOWLEDGE = web.AppKey("knowledge", KnowledgeBase)
KEY_CHECKER = web.AppKey("key_checker", KeyChecker)
BUILD = web.AppKey("build", BuildInfo)
# Support desk background jobs
EVENT_DELIVERY = web.AppKey("event_delivery", EventDelivery)
TEMPLATE_SYNC = web.AppKey("template_sync", TemplateSync)
USER = web.RequestKey("user", Principal)  # set by the auth middleware on every non-public request
