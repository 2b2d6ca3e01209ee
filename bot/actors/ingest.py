"""From a parsed webhook batch to durable rows and actor messages (no AI work awaited here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from bot.actors.conversation import Inbound, Wake
from bot.domain.conversation import ConversationKey, StoredInbound
from bot.observability.metrics import Metrics
from bot.persistence import commands as command_sql
from bot.persistence import conversations as conversation_sql
from bot.persistence import inbox as inbox_sql
from bot.persistence import outbox as outbox_sql
from bot.persistence.conversations import PREVIEWS, TEST_NUMBER_ID, Arrival
from bot.persistence.crm import arrival_contact_stmt
from bot.persistence.database import Database, Stmt
from bot.persistence.events import received_stmts
from bot.persistence.templates import TemplateRepo
from bot.whatsapp.events import BusinessEcho, InboundMessage, WebhookBatch
from bot.whatsapp.templates import apply_status_update

log = structlog.get_logger("bot.ingest")

Tell = Callable[[ConversationKey, Any], None]


class Ingest:
    """Persist first, then tell: a message is acknowledged to Meta only once it is in the inbox.

    One POST is one unit of work for the writer, marked urgent: it commits in the next group,
    before any turn's unit, together with the other POSTs that arrived meanwhile (group commit),
    and a POST whose unit fails gets its own error without failing the others of its group.
    """

    def __init__(self, *, db: Database, tell: Tell, metrics: Metrics | None = None,
                 notify: Callable[..., None] | None = None, acked: Callable[[float], None] | None = None) -> None:
        self._db = db
        self._tell = tell
        self._metrics = metrics
        self._notify = notify
        self._acked = acked  # how long storing took, for the turns' admission (ingest comes first)
        self._templates = TemplateRepo(db)
        self.duplicates_seen = 0

    async def accept(self, batch: WebhookBatch) -> list[StoredInbound]:
        """Store every message, status and echo of one POST; returns the new inbox rows."""
        now, started = time.time(), time.monotonic()
        arrivals = [Arrival.of(m, now) for m in batch.messages]
        arrivals += [Arrival(e.phone_number_id, e.customer_id, e.wa_id, e.user_id, None, now, _echo_text(e)[:200],
                             inbound=False) for e in batch.echoes]
        stmts: list[Stmt] = conversation_sql.arrival_stmts(arrivals, now=now)
        inserts = inbox_sql.insert_stmts(batch.messages, now=now)
        first = len(stmts)
        stmts += inserts
        for m in batch.messages:
            if m.phone_number_id != TEST_NUMBER_ID:
                stmts += received_stmts(_received(m), wamid=m.wamid, now=now)
        if batch.messages:
            stmts.append(arrival_contact_stmt(
                [(m.phone_number_id, m.customer_id, m.wa_id, m.user_id, m.profile_name) for m in batch.messages],
                now=now))
        for status in batch.statuses:
            stmts += outbox_sql.receipt_stmts(status.wamid, status.status, status.error_code, status.error_reason,
                                              now=now)
        for echo in batch.echoes:
            key = ConversationKey(echo.phone_number_id, echo.customer_id)
            stmts.append(command_sql.add_stmt(key, "echo", {"wamid": echo.wamid, "type": echo.type,
                                                           "text": _echo_text(echo)}))
        keys = {(m.phone_number_id, m.customer_id) for m in batch.messages} | \
            {(e.phone_number_id, e.customer_id) for e in batch.echoes}
        results = await self._db.write(stmts, urgent=True, keys=sorted(keys)) if stmts else []
        if self._acked is not None:
            self._acked(time.monotonic() - started)
        new = inbox_sql.new_rows(batch.messages, results[first : first + len(inserts)], now=now)
        self._count(batch, new)
        for stored in new:
            self._tell(stored.message.key, Inbound(stored))
        for key in {ConversationKey(e.phone_number_id, e.customer_id) for e in batch.echoes}:
            self._tell(key, Wake(human=True))
        for update in batch.template_updates:  # Meta reviewed, paused or disabled a template
            if not await apply_status_update(self._templates, update):
                log.info("template_status_for_unknown_template", template=update.name, status=update.event)
        if self._notify is not None:
            for stored in new:
                self._notify("message", conversation=stored.message.customer_id, author="customer")
            for status in batch.statuses:
                self._notify("status", wamid=status.wamid, status=status.status)
        return new

    def _count(self, batch: WebhookBatch, new: list[StoredInbound]) -> None:
        repeats = len(batch.messages) - len(new)
        self.duplicates_seen += repeats
        if self._metrics is None:
            return
        if repeats:
            self._metrics.duplicates.inc(repeats)
        for stored in new:
            if stored.message.phone_number_id != TEST_NUMBER_ID:  # test chats stay out of WhatsApp counts
                self._metrics.messages_in.labels(type=stored.message.type).inc()


def _received(m: InboundMessage) -> dict[str, Any]:
    return {"wamid": m.wamid, "phone_number_id": m.phone_number_id, "customer_id": m.customer_id, "wa_id": m.wa_id,
            "name": m.profile_name, "type": m.type, "text": m.text, "timestamp": m.timestamp}


def _echo_text(echo: BusinessEcho) -> str:
    text = echo.text or PREVIEWS.get(echo.type, f"[{echo.type}]")
    return f"[edited] {text}" if echo.type == "edit" else text
