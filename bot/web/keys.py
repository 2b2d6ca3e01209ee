"""Typed application state keys (aiohttp AppKey), the only way handlers reach shared parts."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from bot.actors.ingest import Ingest
from bot.actors.outbound import Outbound
from bot.actors.registry import Registry
from bot.actors.takeover import Takeover
from bot.ai.engine import Engine
from bot.config import Config
from bot.metrics import Metrics
from bot.persistence import Repositories
from bot.persistence.db import Database
from bot.whatsapp.client import WhatsAppClient

CONFIG = web.AppKey("config", Config)
STARTED_AT = web.AppKey("started_at", float)
METRICS = web.AppKey("metrics", Metrics)
DATABASE = web.AppKey("database", Database)
REPOS = web.AppKey("repos", Repositories)
HTTP = web.AppKey("http", aiohttp.ClientSession)
SENDER = web.AppKey("sender", WhatsAppClient)
ENGINE = web.AppKey("engine", Engine)
REGISTRY = web.AppKey("registry", Registry)
INGEST = web.AppKey("ingest", Ingest)
OUTBOUND = web.AppKey("outbound", Outbound)
TAKEOVER = web.AppKey("takeover", Takeover)
