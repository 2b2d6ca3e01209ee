"""The WhatsApp `ChannelSender`: a conversation's actor sends through this, the Graph client does HTTP."""

from __future__ import annotations

from bot.domain.conversation import Address, ConversationKey, OutboundMessage
from bot.whatsapp.client import WhatsAppClient
from bot.whatsapp.interactive import render_choices


class WhatsAppChannel:
    """Sends texts, interactive and template messages from the conversation's business number."""

    def __init__(self, client: WhatsAppClient) -> None:
        self.client = client

    async def pace(self, key: ConversationKey) -> None:
        """Take the business number's send-rate token now (the next send from that number uses it)."""
        await self.client.reserve(key.business)

    async def send(self, key: ConversationKey, to: Address, message: OutboundMessage) -> str:
        """Post one message; returns its wamid (raises GraphError)."""
        if message.kind == "choices" and message.body is not None:
            # Buttons, a list, or numbered text: whichever WhatsApp's limits allow for these choices.
            rendered = render_choices(message.body.get("text") or message.text, message.body["choices"],
                                      language=message.body.get("language"))
            if rendered.interactive is not None:
                return await self.client.send_interactive(key.business, to, rendered.interactive)
            return await self.client.send_text(key.business, to, rendered.text)
        if message.kind == "interactive" and message.body is not None:
            return await self.client.send_interactive(key.business, to, message.body)
        if message.kind == "template" and message.body is not None:
            body = message.body
            return await self.client.send_template(key.business, to, str(body["name"]),
                                                   str(body["language"]["code"]), list(body.get("components", [])))
        return await self.client.send_text(key.business, to, message.text)

    async def typing(self, key: ConversationKey, to: Address, reply_to: str) -> None:
        """Mark the customer's message read, with the typing indicator until the reply."""
        await self.client.mark_read(key.business, reply_to, typing=True)

    async def react(self, key: ConversationKey, to: Address, message_id: str, emoji: str) -> None:
        """React to (or, with an empty emoji, un-react from) a customer's message."""
        await self.client.send_reaction(key.business, to, message_id, emoji)
