"""Channel-neutral types: who a conversation is with, what comes in, what goes out, what the AI sees.

Nothing here imports the rest of `bot`: WhatsApp parsing, the actors, the AI and the storage all
speak these types, so a second channel is a new `ChannelSender` and a parser, not a rewrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
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
class Edit:
    """The customer edited an earlier message: `original_wamid` is the edited one, `text` its new content."""

    original_wamid: str | None
    new_type: str
    text: str | None


@dataclass(frozen=True, slots=True)
class Revoke:
    """The customer deleted an earlier message for everyone."""

    original_wamid: str | None


@dataclass(frozen=True, slots=True)
class SystemNotice:
    """A notice from WhatsApp about the customer (number or identity changed); never a customer's words.

    `kind` is Meta's `system.type` as sent: `customer_changed_number` / `user_changed_number` (with
    `new_wa_id`), `customer_identity_changed` / `user_identity_changed`, `user_changed_user_id` (with
    `new_user_id`), or whatever Meta adds later.
    """

    kind: str
    body: str | None
    new_wa_id: str | None = None
    new_user_id: str | None = None

    @property
    def number_changed(self) -> bool:
        """The customer moved to a new phone number (`new_wa_id`) or a new business-scoped id."""
        return self.kind in NUMBER_CHANGE_KINDS or (
            self.kind not in IDENTITY_CHANGE_KINDS and (self.new_wa_id is not None or self.new_user_id is not None)
        )

    @property
    def identity_changed(self) -> bool:
        """The customer's identity key changed (a reinstall or a new phone): worth an operator's look."""
        return self.kind in IDENTITY_CHANGE_KINDS


NUMBER_CHANGE_KINDS = frozenset({"customer_changed_number", "user_changed_number", "user_changed_user_id"})
IDENTITY_CHANGE_KINDS = frozenset({"customer_identity_changed", "user_identity_changed"})


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One line of a catalogue order: the product's retailer id (our sku), how many, and Meta's unit price."""

    retailer_id: str
    quantity: int
    item_price: Decimal | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class Order:
    """A cart the customer sent from the business's WhatsApp catalogue."""

    catalog_id: str | None
    items: tuple[OrderItem, ...]
    text: str | None

    def lines(self) -> list[tuple[str, int]]:
        """(sku, quantity) pairs, in the shape the order repository's create_draft takes."""
        return [(item.retailer_id, item.quantity) for item in self.items]


@dataclass(frozen=True, slots=True)
class ChoiceReply:
    """The customer tapped a reply button, a list row, or a template's quick-reply button.

    `kind` is `button_reply`, `list_reply` or `button` (template quick reply: `id` is its payload).
    """

    kind: str
    id: str | None
    title: str | None
    description: str | None = None

    def as_model_text(self) -> str:
        """What the model is told: "the customer chose <title> (<id>)"."""
        title = self.title or self.id or "an option"
        return f"the customer chose {title} ({self.id})" if self.id and self.id != title else \
            f"the customer chose {title}"


@dataclass(frozen=True, slots=True)
class FlowReply:
    """A WhatsApp Flow the customer completed: its fields as (name, value) pairs, `flow_token` left out."""

    name: str | None
    body: str | None
    fields: tuple[tuple[str, str], ...]

    def as_text(self) -> str | None:
        """One "field: value" line per answer (the Flow's own body when it had none)."""
        return "\n".join(f"{key}: {value}" for key, value in self.fields) or self.body


MessageDetail = Edit | Revoke | SystemNotice | Order | ChoiceReply | FlowReply


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One customer message. `customer_id` is the BSUID when Meta sends one, else the phone (wa_id).

    `type` is Meta's type, or the one inferred from the content object when Meta's examples leave it
    out. `detail` carries what the type adds beyond text (see `MessageDetail`); `context_wamid` is the
    business message the customer replied to or quoted.
    """

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
    detail: MessageDetail | None = None
    context_wamid: str | None = None

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


OutboundKind = Literal["text", "choices", "interactive", "template", "reaction"]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What the business sends: a text, an interactive message, a template (body is channel-specific JSON)."""

    kind: OutboundKind
    text: str
    body: dict[str, Any] | None = None


class ChannelSender(Protocol):
    """How a conversation's actor reaches its customer. WhatsApp is one; the local test chat another."""

    async def pace(self, key: ConversationKey) -> None:
        """Wait for the channel's send rate to allow one more message (before the row is marked sending)."""
        ...

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
