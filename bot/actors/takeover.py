"""Human takeover: operators' messages and Business-app echoes pause the AI; pause, resume, hand-off."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from bot.actors.outbound import Outbound
from bot.persistence import Repositories
from bot.persistence.conversations import Conversation
from bot.settings import SettingsSource
from bot.whatsapp.events import BusinessEcho

log = structlog.get_logger("bot.takeover")

# Meta only lets a business write freely within 24 hours of the customer's last message.
SERVICE_WINDOW_SECONDS = 24 * 3600

Notify = Callable[[str, Conversation], Any]


class WindowClosed(Exception):
    """The customer's last message is older than 24 hours: WhatsApp would refuse a free-form message."""


class Takeover:
    """The one place that decides when a person holds a conversation."""

    def __init__(self, *, repos: Repositories, outbound: Outbound, settings: SettingsSource,
                 notify: Notify | None = None) -> None:
        self.repos = repos
        self.outbound = outbound
        self.settings = settings
        self._notify = notify

    async def _pause_until(self) -> float | None:
        cooldown = (await self.settings.current()).human_cooldown_seconds
        return time.time() + cooldown if cooldown > 0 else None

    def _changed(self, what: str, conv: Conversation) -> None:
        if self._notify is not None:
            self._notify(what, conv)

    async def human_stepped_in(self, conv: Conversation) -> None:
        """Pause the AI: until handed back (cooldown 0) or for the cooldown after this message."""
        await self.repos.conversations.pause(conv.id, until=await self._pause_until())
        log.info("ai_paused", session_id=conv.session_id, reason="human_message")

    async def operator_message(self, conv: Conversation, text: str, *, user: str | None = None) -> int:
        """Send an operator's message now (not behind a model call) and pause the AI; returns the outbox id."""
        if conv.is_test is False and (
            conv.last_inbound_at is None or time.time() - conv.last_inbound_at > SERVICE_WINDOW_SECONDS
        ):
            raise WindowClosed(
                "The customer's last message is more than 24 hours old, so WhatsApp only allows approved "
                "template messages now. Wait for the customer to write again, or send a template from "
                "WhatsApp Manager."
            )
        # Pause first: a model turn that is thinking right now must see it and drop its draft.
        await self.human_stepped_in(conv)
        ids = await self.repos.outbox.enqueue(conv.phone_number_id, conv.customer_id, author="operator",
                                              parts=[text], reply_to_inbox_id=None)
        row = await self.repos.outbox.get(ids[0])
        assert row is not None
        fresh = await self.repos.conversations.get(conv.phone_number_id, conv.customer_id) or conv
        await self.outbound.send(fresh, row)
        log.info("operator_message_sent", session_id=conv.session_id, user=user)
        self._changed("operator_message", fresh)
        return row.id

    async def echoes(self, echoes: list[BusinessEcho]) -> None:
        """Messages sent from the WhatsApp Business app (incl. edits and deletions) are a human at work."""
        for echo in echoes:
            conv = await self.repos.conversations.ensure(
                echo.phone_number_id, echo.customer_id, wa_id=echo.wa_id, user_id=echo.user_id
            )
            text = echo.text or {"revoke": "[message deleted]"}.get(echo.type, f"[{echo.type}]")
            if echo.type == "edit":
                text = f"[edited] {text}"
            # One transaction: if pausing fails, the echo is not kept either, so Meta's redelivery pauses.
            async with self.repos.db.transaction():
                new = await self.repos.outbox.record_echo(
                    echo.phone_number_id, echo.customer_id, wamid=echo.wamid, kind=echo.type, text=text
                )
                if new:
                    await self.human_stepped_in(conv)
            if not new:
                continue  # Meta re-delivered an echo we already counted
            fresh = await self.repos.conversations.get(conv.phone_number_id, conv.customer_id) or conv
            self._changed("echo", fresh)

    async def pause(self, conv: Conversation) -> None:
        """An operator holds the conversation without writing (until handed back)."""
        await self.repos.conversations.pause(conv.id, until=None)
        self._changed("paused", conv)

    async def resume(self, conv: Conversation) -> None:
        """Hand back to the AI; the next turn gets what was said meanwhile as context."""
        await self.repos.conversations.resume(conv.id)
        log.info("ai_resumed", session_id=conv.session_id)
        self._changed("resumed", conv)

    async def hand_off(self, conv: Conversation) -> None:
        """The customer asked for a person: pause, flag 'needs human' for operators."""
        await self.repos.conversations.pause(conv.id, until=None, needs_human=True)
        log.info("handoff_requested", session_id=conv.session_id)
        self._changed("needs_human", conv)
