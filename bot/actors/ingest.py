"""From a parsed webhook batch to durable rows and actor messages (no AI work awaited here)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from bot.actors.conversation import ConversationKey, Inbound
from bot.metrics import Metrics
from bot.persistence import Repositories
from bot.persistence.conversations import TEST_NUMBER_ID
from bot.persistence.db import DatabaseUnavailable
from bot.whatsapp.events import BusinessEcho, InboundMessage, WebhookBatch

log = structlog.get_logger("bot.ingest")

Tell = Callable[[ConversationKey, Any], None]
EchoHandler = Callable[[list[BusinessEcho]], Any]
NewRows = list[tuple[int, InboundMessage]]


@dataclass(slots=True)
class _Group:
    """Webhook batches committed together: one transaction for every POST that arrived meanwhile."""

    done: asyncio.Future[None]
    batches: list[WebhookBatch] = field(default_factory=list)
    new_rows: list[NewRows] = field(default_factory=list)
    error: BaseException | None = None


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
        self._open: _Group | None = None

    async def accept(self, batch: WebhookBatch) -> list[int]:
        """Store every message and status of one POST; returns the ids of new inbox rows."""
        new_rows = await self._store(batch)
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

    async def _store(self, batch: WebhookBatch) -> NewRows:
        """Group commit: the first POST of a group writes it; POSTs arriving before its transaction starts join.

        One transaction per POST capped ingest at about 1,500 acks/s (four round trips to the database
        thread each, serialised by the transaction lock). A group still commits before any of its POSTs
        is answered, so a 200 keeps meaning "stored".
        """
        group = self._open
        if group is not None:
            index = len(group.batches)
            group.batches.append(batch)
            # shield: a cancelled POST must not cancel the future the rest of its group waits on.
            await asyncio.shield(group.done)
        else:
            group = self._open = _Group(asyncio.get_running_loop().create_future())
            index = 0
            group.batches.append(batch)
            await self._write(group)
        if group.error is not None:
            if isinstance(group.error, DatabaseUnavailable):
                raise DatabaseUnavailable(str(group.error)) from group.error
            raise group.error
        return group.new_rows[index]

    async def _write(self, group: _Group) -> None:
        try:
            async with self._repos.db.transaction():
                if self._open is group:
                    self._open = None  # closed: later POSTs start the next group
                messages = [m for b in group.batches for m in b.messages]
                stored = await self._repos.inbox.add(messages) if messages else []
                new_ids = {id(msg): inbox_id for inbox_id, msg in stored}
                for b in group.batches:
                    group.new_rows.append([(new_ids[id(m)], m) for m in b.messages if id(m) in new_ids])
                    for status in b.statuses:
                        await self._repos.outbox.apply_status(
                            status.wamid, status.status, status.error_code, status.error_reason
                        )
        except BaseException as exc:
            # Nothing of the group was committed: every POST in it fails alike (503 for the database).
            if self._open is group:
                self._open = None
            group.error = exc if isinstance(exc, Exception) else DatabaseUnavailable("the server is stopping")
            group.new_rows.clear()
            raise
        finally:
            if not group.done.done():
                group.done.set_result(None)
