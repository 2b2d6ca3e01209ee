"""Which `ChannelSender` reaches a conversation: WhatsApp, or the local channel of the operators' test chat."""

from __future__ import annotations

import secrets

from bot.domain.conversation import Address, ChannelSender, ConversationKey, OutboundMessage


class LocalChannel:
    """The test chat: a reply is "delivered" by being stored, and the inbox page shows it. Nothing leaves."""

    async def pace(self, key: ConversationKey) -> None:
        """No rate to keep."""

    async def send(self, key: ConversationKey, to: Address, message: OutboundMessage) -> str:
        """Accept the message at once; its id only has to be unique."""
        return f"local.{secrets.token_hex(8)}"

    async def typing(self, key: ConversationKey, to: Address, reply_to: str) -> None:
        """Nothing to show: the page knows a turn is running."""

    async def react(self, key: ConversationKey, to: Address, message_id: str, emoji: str) -> None:
        """Reactions are a WhatsApp nicety; the test chat goes without."""


class Channels:
    """Routes a conversation to its channel by its key."""

    def __init__(self, *, whatsapp: ChannelSender, local: ChannelSender | None = None) -> None:
        self._whatsapp = whatsapp
        self._local = local or LocalChannel()

    def for_key(self, key: ConversationKey) -> ChannelSender:
        """The sender for this conversation."""
        return self._local if key.is_local else self._whatsapp
