"""From a parsed webhook batch to durable rows and actor messages (no AI work awaited here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from bot.actors.conversation import ConversationKey, Inbound
from bot.metrics import Metrics
from bot.persistence import Repositories
from bot.persistence.conversations import TEST_NUMBER_ID
from bot.whatsapp.events import BusinessEcho, WebhookBatch

log = structlog.get_logger("bot.ingest")

Tell = Callable[[ConversationKey, Any], None]
EchoHandler = Callable[[list[BusinessEcho]], Any]


class Ingest:
    """Persist first, then tell: a message is acknowledged to Meta only once it is in the inbox."""

    def __init__(self, *, repos: Repositories, tell: Tell, on_echoes: EchoHandler | None = None,
                 metrics: Metrics | None = None, notify: Callable[..., None] | None = None) -> None:
        self._repos = repos
        self._tell = tell
        self._on_echoes = on_echoes
        self._metrics = metrics
        self._notify = notify
        self.duplicates_seen = 0

    async def accept(self, batch: WebhookBatch) -> list[int]:
        """Store every message and status of one POST; returns the ids of new inbox rows."""
        new_rows = []
        async with self._repos.db.transaction():
            if batch.messages:
                new_rows = await self._repos.inbox.add(batch.messages)
            for status in batch.statuses:
                await self._repos.outbox.apply_status(
                    status.wamid, status.status, status.error_code, status.error_reason
                )
        repeats = len(batch.messages) - len(new_rows)
        self.duplicates_seen += repeats
        if self._metrics is not None:
            if repeats:
                self._metrics.duplicates.inc(repeats)
            for _, msg in new_rows:
                if msg.phone_number_id != TEST_NUMBER_ID:  # test chats stay out of WhatsApp counts
                    self._metrics.messages_in.labels(type=msg.type).inc()
        for inbox_id, msg in new_rows:
            self._tell((msg.phone_number_id, msg.customer_id), Inbound(inbox_id))
        if self._notify is not None:
            for _, msg in new_rows:
                self._notify("message", conversation=msg.customer_id, author="customer")
            for status in batch.statuses:
                self._notify("status", wamid=status.wamid, status=status.status)
        if batch.echoes and self._on_echoes is not None:
            await self._on_echoes(batch.echoes)
        return [inbox_id for inbox_id, _ in new_rows]
