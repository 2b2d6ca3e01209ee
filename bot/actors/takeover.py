"""What operators and the server's own pages ask of a conversation; its actor carries it out.

Nothing here sends or changes a conversation's state: an operator's message is appended to the
outbox as `queued` (the durable way to tell the actor), a pause or a hand-back is a command in the
actor's durable mailbox, and then the actor is told. Every HTTP handler answers at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from bot.actors.conversation import Reload, Wake
from bot.domain.conversation import ConversationKey, OutboundMessage
from bot.persistence import Repositories
from bot.persistence.conversations import Conversation
from bot.persistence.database import Tx
from bot.persistence.outbox import OutboxRow, enqueue_stmts

log = structlog.get_logger("bot.takeover")

# Meta only lets a business write freely within 24 hours of the customer's last message.
SERVICE_WINDOW_SECONDS = 24 * 3600

Tell = Callable[[ConversationKey, Any], None]


class WindowClosed(Exception):
    """The customer's last message is older than 24 hours: WhatsApp would refuse a free-form message."""


def window_open(conv: Conversation, now: float | None = None) -> bool:
    """Whether a free-form message may go to this customer now (always, for the test chat)."""
    if conv.is_test:
        return True
    return conv.last_inbound_at is not None and (now or time.time()) - conv.last_inbound_at <= SERVICE_WINDOW_SECONDS


class Takeover:
    """The operators' side of human takeover: messages, pause, hand back. Answers without waiting."""

    def __init__(self, *, repos: Repositories, tell: Tell) -> None:
        self.repos = repos
        self._tell = tell

    async def operator_message(self, conv: Conversation, text: str, *, user: str | None = None) -> OutboxRow:
        """Queue an operator's message; the actor pauses the AI (dropping a draft in progress) and sends it."""
        if not window_open(conv):
            raise WindowClosed(
                "The customer's last message is more than 24 hours old, so WhatsApp only allows approved "
                "template messages now. Send one with POST /api/conversations/{wa_id}/template, or wait "
                "for the customer to write again."
            )
        ids = await self.repos.outbox.enqueue(conv.key, [OutboundMessage("text", text)], author="operator")
        self._tell(conv.key, Wake(human=True))
        log.info("operator_message_queued", session_id=conv.session_id, user=user)
        row = await self.repos.outbox.get(ids[0])
        assert row is not None
        return row

    async def send_template(self, conv: Conversation, *, name: str, language: str, components: list[dict[str, Any]],
                            preview: str, user: str | None = None) -> OutboxRow:
        """Queue an approved template (allowed outside the 24-hour window); it pauses the AI like any operator message.

        `preview` is the text as the customer will read it: the inbox shows it, and the model gets it
        as context when the conversation is handed back.
        """
        body: dict[str, Any] = {"name": name, "language": {"code": language}}
        if components:
            body["components"] = components
        ids = await self.repos.outbox.enqueue(conv.key, [OutboundMessage("template", preview, body)], author="operator")
        self._tell(conv.key, Wake(human=True))
        log.info("operator_template_queued", session_id=conv.session_id, user=user, template=name)
        row = await self.repos.outbox.get(ids[0])
        assert row is not None
        return row

    async def pause(self, conv: Conversation) -> None:
        """An operator holds the conversation without writing (until handed back)."""
        await self.repos.commands.add(conv.key, "pause")
        self._tell(conv.key, Wake(human=True))

    async def resume(self, conv: Conversation) -> None:
        """Hand back to the AI; the next turn gets what was said meanwhile as context."""
        await self.repos.commands.add(conv.key, "resume")
        self._tell(conv.key, Wake())

    @staticmethod
    async def queue_system_text(tx: Tx, key: ConversationKey, text: str) -> None:
        """Inside the caller's transaction: a text from the server itself (an order confirmation)."""
        await tx.run(enqueue_stmts(key, [OutboundMessage("text", text)], author="system", reply_to_inbox_id=None))

    def wake(self, key: ConversationKey) -> None:
        """Tell the conversation's actor to look at its durable mailbox (after `queue_system_text`)."""
        self._tell(key, Wake())

    def contact_changed(self, conv: Conversation) -> None:
        """An operator edited the conversation's contact: its live actor reads it again before the next turn."""
        self._tell(conv.key, Reload())
