"""Typed application state keys (aiohttp AppKey), the only way handlers reach shared parts."""

from __future__ import annotations

import time

from aiohttp import web

from bot.actors.ingest import Ingest
from bot.actors.outbound import Outbound
from bot.actors.registry import Registry
from bot.actors.takeover import Takeover
from bot.ai.engine import Engine
from bot.config import Config
from bot.persistence import Repositories
from bot.persistence.db import Database

CONFIG = web.AppKey("config", Config)
DATABASE = web.AppKey("database", Database)
REPOS = web.AppKey("repos", Repositories)
ENGINE = web.AppKey("engine", Engine)
REGISTRY = web.AppKey("registry", Registry)
INGEST = web.AppKey("ingest", Ingest)
STARTED_AT = web.AppKey("started_at", float)
OUTBOUND = web.AppKey("outbound", Outbound)
TAKEOVER = web.AppKey("takeover", Takeover)

__all__ = [
    "CONFIG", "DATABASE", "ENGINE", "INGEST", "OUTBOUND", "REGISTRY", "REPOS", "STARTED_AT", "TAKEOVER", "time",
]
