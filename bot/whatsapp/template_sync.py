"""Keeping the stored message templates in step with the WABA: at start, every hour, and on demand.

Without WHATSAPP_BUSINESS_ACCOUNT_ID or WHATSAPP_ACCESS_TOKEN there is nothing to sync: the job says
so once in the log, and `problem` tells the settings page what to set. Meta's status webhooks keep
the stored statuses fresh in between (bot/actors/ingest.py).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from bot.domain.background import Background
from bot.whatsapp.client import GraphError
from bot.whatsapp.templates import TemplateSource, TemplateStore, TemplateSyncError, sync

log = structlog.get_logger("bot.whatsapp.template_sync")

INTERVAL_SECONDS = 3600.0
RETRY_SECONDS = 300.0  # after the Graph API failed: sooner than the hour


class TemplateSync:
    """The template sync job; its background task is owned here (start, stop)."""

    def __init__(self, *, source: TemplateSource, store: TemplateStore, waba_id: str,
                 interval_seconds: float = INTERVAL_SECONDS, retry_seconds: float = RETRY_SECONDS) -> None:
        self._source = source
        self._store = store
        self.waba_id = waba_id.strip()
        self._interval = interval_seconds
        self._retry = retry_seconds
        self._lock = asyncio.Lock()
        self._job = Background(self._run, "template-sync")
        self._told_problem = False
        self.synced_at: float | None = None
        self.count: int | None = None
        self.error: str | None = None  # the last sync's failure (Graph), None after a success
        self.problem: str | None = None  # a setting that is missing, and which

    def start(self) -> None:
        """Sync now (in the background) and every hour after."""
        self._job.start()

    async def stop(self) -> None:
        """Stop the job (a sync in flight is abandoned; the stored set stays as it was)."""
        await self._job.stop()

    async def sync_now(self) -> int:
        """One full sync; raises TemplateSyncError (a setting is missing) or GraphError, recorded for the page."""
        async with self._lock:  # a click on "Sync now" waits for the hourly run rather than racing it
            try:
                count = await sync(source=self._source, store=self._store, waba_id=self.waba_id)
            except TemplateSyncError as exc:
                self.problem = str(exc)
                raise
            except GraphError as exc:
                self.problem, self.error = None, exc.reason
                raise
            self.problem, self.error = None, None
            self.synced_at, self.count = time.time(), count
            log.info("templates_synced", count=count)
            return count

    async def _run(self) -> None:
        while True:
            wait = self._interval
            try:
                await self.sync_now()
            except TemplateSyncError as exc:
                if not self._told_problem:
                    self._told_problem = True
                    log.warning("templates_not_synced", reason=str(exc))
            except GraphError as exc:
                log.warning("template_sync_failed", error=exc.reason)
                wait = self._retry
            except Exception as exc:  # the database is away, say: the job must live on
                log.warning("template_sync_failed", error=str(exc))
                wait = self._retry
            await asyncio.sleep(wait)
