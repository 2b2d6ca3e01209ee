"""Channel-neutral types: who a conversation is with, what comes in, what goes out, what the AI sees.

Nothing here imports the rest of `bot`: WhatsApp parsing, the actors, the AI and the storage all
speak these types, so a second channel is a new `ChannelSender` and a parser, not a rewrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# The business endpoint of the operators' test chat: its messages never leave the server.
LOCAL_CHANNEL = "test"


@dataclass(frozen=True, slots=True, order=True)
class ConversationKey:
    """One customer on one business endpoint (a WhatsApp phone_number_id, or the local test chat)."""

    business: str
    customer: str

    @property
    def is_local(self) -> bool:
        """True for the test chat, whose replies are shown on the page and never sent."""
        return self.business == LOCAL_CHANNEL

    def __str__(self) -> str:
        # Logs and task names: never the customer's number in the clear.
        return f"{self.business}/{mask_phone(self.customer) if self.customer.isdigit() else 'bsuid'}"


def mask_phone(number: str | None) -> str:
    """A log-safe form: +39******4567 (country part and last four digits only)."""
    if not number:
        return "-"
    digits = re.sub(r"\D", "", number)
    if len(digits) <= 6:
        return "*" * len(digits)
    return f"+{digits[:2]}{'*' * (len(digits) - 6)}{digits[-4:]}"


@dataclass(frozen=True, slots=True)
class Address:
    """Where a customer is reached: a phone number, or (username users) a business-scoped user id."""

    wa_id: str | None
    user_id: str | None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One customer message as a channel delivered it. `customer_id` is the BSUID when given, else the phone."""

    wamid: str
    phone_number_id: str
    customer_id: str
    wa_id: str | None
    user_id: str | None
    profile_name: str | None
    type: str
    text: str | None
    payload: dict[str, Any] = field(hash=False, compare=False)
    timestamp: int | None = None

    @property
    def key(self) -> ConversationKey:
        """The conversation this message belongs to."""
        return ConversationKey(self.phone_number_id, self.customer_id)


@dataclass(frozen=True, slots=True)
class StoredInbound:
    """A customer message that is in the inbox (its row id) and waits for its conversation's actor."""

    inbox_id: int
    message: InboundMessage
    received_at: float


OutboundKind = Literal["text", "interactive", "template", "reaction"]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What the business sends: a text, an interactive message, a template (body is channel-specific JSON)."""

    kind: OutboundKind
    text: str
    body: dict[str, Any] | None = None


class ChannelSender(Protocol):
    """How a conversation's actor reaches its customer. WhatsApp is one; the local test chat another."""

    async def send(self, key: ConversationKey, to: Address, message: OutboundMessage) -> str:
        """Deliver one message; returns the channel's id for it. Raises SendError."""
        ...

    async def typing(self, key: ConversationKey, to: Address, reply_to: str) -> None:
        """Best effort: mark the customer's message read and show that an answer is coming."""
        ...

    async def react(self, key: ConversationKey, to: Address, message_id: str, emoji: str) -> None:
        """Best effort: react to a customer's message (an empty emoji removes the reaction)."""
        ...


class SendError(Exception):
    """A send failed. `retryable` says whether trying again later can help; `code` is the channel's."""

    def __init__(self, message: str, *, code: int | None = None, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        """A one-line reason with the code, for the outbox row and diagnostics."""
        prefix = f"error {self.code}: " if self.code is not None else ""
        return prefix + str(self)


@dataclass(frozen=True, slots=True)
class Session:
    """What the AI knows of a conversation: a random session id and its chain, never a phone number."""

    session_id: str
    previous_response_id: str | None
    previous_response_at: float | None
    language: str | None
