"""Sending outbox rows through the Graph API: at most once, with backoff on transient errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from bot.backoff import Backoff
from bot.persistence import Repositories
from bot.persistence.conversations import Conversation
from bot.persistence.db import DatabaseUnavailable
from bot.persistence.outbox import OutboxRow
from bot.whatsapp.client import GraphError, Recipient

log = structlog.get_logger("bot.outbound")


class Sender(Protocol):
    """The Graph API calls the server makes."""

    async def send_text(self, phone_number_id: str, to: Recipient, text: str) -> str:
        """Send a text; returns the wamid."""
        ...

    async def send_reaction(self, phone_number_id: str, to: Recipient, message_id: str, emoji: str) -> None:
        """React to a message (empty emoji removes it)."""
        ...

    async def mark_read(self, phone_number_id: str, message_id: str, *, typing: bool = True) -> None:
        """Mark read and show typing."""
        ...


class Outbound:
    """Sends queued outbox rows. Test-chat conversations never reach Graph: `local_delivery` takes them."""

    def __init__(self, *, repos: Repositories, sender: Sender, backoff: Backoff,
                 on_sent: Callable[[OutboxRow, Conversation], None] | None = None,
                 on_failed: Callable[[int | None], None] | None = None) -> None:
        self.repos = repos
        self.sender = sender
        self._backoff = backoff
        self._on_sent = on_sent
        self._on_failed = on_failed

    async def flush(self, phone_number_id: str, customer_id: str) -> None:
        """Send every queued row of one conversation, oldest first."""
        queued = await self.repos.outbox.queued(phone_number_id, customer_id)
        if not queued:
            return
        conv = await self.repos.conversations.get(phone_number_id, customer_id)
        if conv is None:
            return
        for row in queued:
            await self.send(conv, row)

    async def send(self, conv: Conversation, row: OutboxRow) -> bool:
        """Send one row; True when Graph accepted it."""
        repos = self.repos
        if conv.is_test:
            # Test chat: the reply is shown on the page and never leaves the server.
            await repos.outbox.mark_sent(row.id, f"local.{row.id}")
            await repos.conversations.touch(conv.id, inbound=False, preview=row.text)
            self._sent(row, conv)
            return True
        recipient = Recipient(conv.wa_id, conv.user_id)
        attempt = row.attempts
        first_try = time.monotonic()
        while True:
            attempt += 1
            await repos.outbox.mark_sending(row.id)
            try:
                wamid = await self.sender.send_text(conv.phone_number_id, recipient, row.text)
            except GraphError as exc:
                if not exc.retryable or self._backoff.exhausted(attempt, first_try):
                    await repos.outbox.mark_failed(row.id, exc.code, exc.reason)
                    await repos.errors.record(f"send_failed:{exc.code or 'network'}", exc.reason,
                                              session_id=conv.session_id)
                    log.warning("reply_failed", code=exc.code, reason=exc.reason, author=row.author)
                    if self._on_failed is not None:
                        self._on_failed(exc.code)
                    return False
                # Graph answered (or the network failed) without accepting it: safe to try again.
                await repos.outbox.requeue(row.id, exc.reason)
                delay = self._backoff.delay(attempt, exc.retry_after)
                log.info("reply_retried", attempt=attempt, delay=round(delay, 2), reason=exc.reason)
                await asyncio.sleep(delay)
                continue
            await self._record_sent(row.id, wamid)
            await repos.conversations.touch(conv.id, inbound=False, preview=row.text)
            log.info("reply_sent", author=row.author, chars=len(row.text))
            self._sent(row, conv)
            return True

    async def _record_sent(self, row_id: int, wamid: str) -> None:
        """Meta has the message: keep trying to record it, or it would stay 'sending' and its receipts orphaned."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.repos.outbox.mark_sent(row_id, wamid)
                return
            except DatabaseUnavailable:
                if self._backoff.exhausted(attempt):
                    raise  # still 'sending': never resent, marked 'unknown' at the next start
                await asyncio.sleep(self._backoff.delay(attempt))

    def _sent(self, row: OutboxRow, conv: Conversation) -> None:
        if self._on_sent is not None:
            self._on_sent(row, conv)
