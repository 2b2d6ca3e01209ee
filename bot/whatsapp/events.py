"""Typed events parsed from Meta's webhook payloads (frozen dataclasses, no I/O).

The parser accepts what it can read and reports the rest: one malformed change or message never
costs the valid ones beside it (Meta batches up to 1000 updates a POST, and answers a non-200 by
redelivering the whole POST for days). Each item it leaves out is listed in `WebhookBatch.skipped`
with where it was and why. A POST is refused (PayloadError) only when nothing in it could be read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import orjson

from bot.domain.conversation import (
    ChoiceReply,
    Edit,
    FlowReply,
    InboundMessage,
    MessageDetail,
    Order,
    OrderItem,
    Revoke,
    SystemNotice,
)

__all__ = [
    "BusinessEcho", "ChoiceReply", "Edit", "FlowReply", "InboundMessage", "MessageDetail", "Order", "OrderItem",
    "PayloadError", "Revoke", "StatusUpdate", "SystemNotice", "TemplateStatusUpdate", "WebhookBatch",
    "message_detail", "message_type", "parse_webhook",
]

T = TypeVar("T")
MAX_FLOW_DEPTH = 8  # a Flow answer nests a little (a date range, a list of choices), never deeply
MAX_PRICE = Decimal(10**12)


class PayloadError(ValueError):
    """The body is JSON but not a WhatsApp Business Account webhook payload."""


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """Delivery progress of a message the business sent."""

    wamid: str
    status: str
    recipient: str | None
    timestamp: int | None
    error_code: int | None = None
    error_reason: str | None = None


@dataclass(frozen=True, slots=True)
class BusinessEcho:
    """A message the business sent from the WhatsApp Business app on the same number (a human)."""

    wamid: str
    phone_number_id: str
    customer_id: str
    wa_id: str | None
    user_id: str | None
    type: str
    text: str | None
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class TemplateStatusUpdate:
    """Meta reviewed, paused or disabled one of the WABA's message templates (`event`: APPROVED, REJECTED…)."""

    waba_id: str | None
    template_id: str | None
    name: str | None
    language: str | None
    event: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookBatch:
    """Everything one POST carried, in payload order, and what was left out: (where, why) pairs."""

    messages: list[InboundMessage]
    statuses: list[StatusUpdate]
    echoes: list[BusinessEcho]
    template_updates: list[TemplateStatusUpdate] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# The content objects a message can carry, in the order a type is inferred from them when `type` is missing.
CONTENT_TYPES = (
    "text", "image", "audio", "video", "document", "sticker", "location", "contacts", "interactive",
    "button", "reaction", "order", "system", "edit", "revoke", "unsupported",
)


class _Skip(Exception):
    """One item cannot be read; the message says why (never a value from the payload: it may be a number)."""


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _int(value: Any) -> int | None:
    # Meta sends timestamps and codes as numbers or digit strings; anything outside SQLite's 64-bit
    # INTEGER (2**64, 1e300, "999...") is not one of them, and would fail the inbox write with a 500.
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if -(2**63) <= number < 2**63 else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Skip(f"{where} must be a list")
    return value


def message_type(msg: dict[str, Any]) -> str:
    """Meta's `type`, else the type named by the content object present (Meta's own examples omit it)."""
    declared = _str(msg.get("type"))
    if declared is not None:
        return declared
    for kind in CONTENT_TYPES:
        if isinstance(msg.get(kind), dict | list):
            return kind
    return "unknown"


def message_text(msg: dict[str, Any]) -> str | None:
    """The text a message carries for the inbox and the model, for the types that have one."""
    kind = message_type(msg)
    content = _dict(msg.get(kind))
    if kind == "text":
        return _str(content.get("body"))
    if kind == "interactive":
        detail = _interactive(content)
        if isinstance(detail, FlowReply):
            return detail.as_text()
        return detail.title if detail is not None else None
    if kind == "button":
        return _str(content.get("text")) or _str(content.get("payload"))
    if kind == "edit":
        # An edit of an edit is not a thing Meta sends: not descending keeps a hostile payload from recursing.
        inner = _dict(content.get("message"))
        return message_text(inner) if message_type(inner) != "edit" else None
    if kind == "order":
        return _str(content.get("text"))
    if kind == "system":
        return _str(content.get("body"))
    if kind == "revoke":
        return None
    return _str(content.get("caption"))


def message_detail(msg: dict[str, Any]) -> MessageDetail | None:
    """What a message adds beyond text, by type; also works on a payload read back from the inbox."""
    kind = message_type(msg)
    content = _dict(msg.get(kind))
    context_id = _str(_dict(msg.get("context")).get("id"))
    match kind:
        case "edit":
            new = _dict(content.get("message"))
            original = _str(content.get("original_message_id")) or _str(_dict(new.get("context")).get("id"))
            return Edit(original or context_id, message_type(new) if new else "unknown", message_text(msg))
        case "revoke":
            return Revoke(_str(content.get("original_message_id")) or context_id)
        case "system":
            return SystemNotice(
                kind=_str(content.get("type")) or "unknown",
                body=_str(content.get("body")),
                # v12+ sends new_wa_id; webhooks of v11 and earlier sent the new number as system.wa_id.
                new_wa_id=_str(content.get("new_wa_id")) or _str(content.get("wa_id")),
                new_user_id=_str(content.get("new_user_id")) or _str(content.get("user")),
            )
        case "order":
            return _order(content)
        case "interactive":
            return _interactive(content)
        case "button":
            return ChoiceReply("button", _str(content.get("payload")), _str(content.get("text")))
    return None


def _interactive(content: dict[str, Any]) -> ChoiceReply | FlowReply | None:
    kind = _str(content.get("type"))
    if kind == "nfm_reply" or (kind is None and "nfm_reply" in content):
        reply = _dict(content.get("nfm_reply"))
        return FlowReply(_str(reply.get("name")), _str(reply.get("body")), _flow_fields(reply.get("response_json")))
    for reply_kind in (kind, "button_reply", "list_reply"):
        reply = _dict(content.get(reply_kind)) if reply_kind in ("button_reply", "list_reply") else {}
        if reply:
            return ChoiceReply(
                str(reply_kind), _str(reply.get("id")), _str(reply.get("title")), _str(reply.get("description"))
            )
    return None


def _flow_fields(raw: Any) -> tuple[tuple[str, str], ...]:
    """Flatten a Flow's response_json (a JSON string, or an object in some test fixtures) to readable pairs."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return ()
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, dict) and depth < MAX_FLOW_DEPTH:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner, depth + 1)
            return
        if isinstance(value, list):
            value = ", ".join(_flow_value(v) for v in value if _flow_value(v))
        text = _flow_value(value)
        if prefix and text:
            pairs.append((prefix, text))

    if isinstance(raw, dict):
        walk("", {k: v for k, v in raw.items() if k != "flow_token"}, 0)
    return tuple(pairs)


def _flow_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str | int | float):
        return str(value).strip()
    if isinstance(value, dict | list):
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # nested past orjson's depth limit: not an answer a person gave
            return ""
    return ""


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() and 0 <= number < MAX_PRICE else None


def _order(content: dict[str, Any]) -> Order:
    items: list[OrderItem] = []
    raw_items = content.get("product_items")
    for raw in raw_items if isinstance(raw_items, list) else []:
        item = _dict(raw)
        retailer_id = _str(item.get("product_retailer_id"))
        quantity = _int(item.get("quantity"))
        if retailer_id is None or quantity is None or quantity <= 0:
            continue  # a line Meta could not have sent: the rest of the cart still counts
        currency = _str(item.get("currency"))
        items.append(OrderItem(retailer_id, quantity, _decimal(item.get("item_price")),
                               currency.upper() if currency else None))
    return Order(_str(content.get("catalog_id")), tuple(items), _str(content.get("text")))


@dataclass(slots=True)
class _Collector:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    echoes: list[BusinessEcho] = field(default_factory=list)
    template_updates: list[TemplateStatusUpdate] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0  # well-formed changes of fields this server does not handle

    def readable(self) -> bool:
        return bool(self.messages or self.statuses or self.echoes or self.template_updates or self.ignored)


def parse_webhook(body: Any) -> WebhookBatch:
    """Walk entry[] × changes[] × messages[]/statuses[]/message_echoes[], keeping what can be read.

    Raises PayloadError only when the body is not a WhatsApp webhook at all, or nothing in it could be read.
    """
    if not isinstance(body, dict) or body.get("object") != "whatsapp_business_account":
        raise PayloadError('expected {"object": "whatsapp_business_account", "entry": [...]}')
    entries = body.get("entry")
    if entries is not None and not isinstance(entries, list):
        raise PayloadError("entry must be a list")
    out = _Collector()
    for e, entry in enumerate(entries or []):
        where = f"entry[{e}]"
        if not isinstance(entry, dict):
            out.skipped.append((where, "an entry must be an object"))
            continue
        try:
            changes = _items(entry.get("changes"), "entry.changes")
        except _Skip as exc:
            out.skipped.append((where, str(exc)))
            continue
        for c, change in enumerate(changes):
            _parse_change(out, f"{where}.changes[{c}]", change, waba_id=_str(entry.get("id")))
    if out.skipped and not out.readable():
        raise PayloadError("nothing in it could be read: " + "; ".join(f"{w}: {why}" for w, why in out.skipped[:3]))
    return WebhookBatch(messages=out.messages, statuses=out.statuses, echoes=out.echoes,
                        template_updates=out.template_updates, skipped=out.skipped)


def _parse_change(out: _Collector, where: str, change: Any, *, waba_id: str | None) -> None:
    if not isinstance(change, dict):
        out.skipped.append((where, "a change must be an object"))
        return
    value = change.get("value")
    field_name = change.get("field")
    if not isinstance(value, dict):
        out.skipped.append((where, "value must be an object"))
        return
    if field_name == "message_template_status_update":
        try:
            out.template_updates.append(_parse_template_update(value, waba_id))
        except _Skip as exc:
            out.skipped.append((where, str(exc)))
        return
    if field_name not in ("messages", "smb_message_echoes"):
        out.ignored += 1
        return
    phone_number_id = _str(_dict(value.get("metadata")).get("phone_number_id"))
    if phone_number_id is None:
        out.skipped.append((where, "value.metadata.phone_number_id is missing"))
        return
    # One of the few business numbers: one string for every key and message, not one per POST.
    phone_number_id = sys.intern(phone_number_id)
    try:
        contacts = _items(value.get("contacts"), "value.contacts")
    except _Skip as exc:
        out.skipped.append((where, str(exc)))
        contacts = []
    people = [c for c in contacts if isinstance(c, dict)]
    if field_name == "messages":
        _collect(out, where, value, "messages", lambda m: _parse_message(m, phone_number_id, people), out.messages)
        _collect(out, where, value, "statuses", _parse_status, out.statuses)
    else:
        _collect(out, where, value, "message_echoes", lambda m: _parse_echo(m, phone_number_id), out.echoes)


def _collect(out: _Collector, where: str, value: dict[str, Any], key: str, parse: Callable[[Any], T],
             sink: list[T]) -> None:
    """Parse each item of value[key] into sink; an item that cannot be read is skipped with its reason."""
    try:
        items = _items(value.get(key), f"value.{key}")
    except _Skip as exc:
        out.skipped.append((where, str(exc)))
        return
    for i, item in enumerate(items):
        try:
            sink.append(parse(item))
        except _Skip as exc:
            out.skipped.append((f"{where}.{key}[{i}]", str(exc)))


def _sender(msg: dict[str, Any], people: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(wa_id, user_id): the message's own fields, completed from the contact they match.

    Meta omits the phone for username users (and older payloads sent ""), so both count as absent. A
    message with neither field is the one contact's, when the change has exactly one.
    """
    wa_id = _str(msg.get("from"))
    user_id = _str(msg.get("from_user_id"))
    if wa_id is None and user_id is None:
        if len(people) != 1:
            return None, None
        match = people[0]
    else:
        match = next((p for p in people if (user_id and _str(p.get("user_id")) == user_id)
                      or (wa_id and _str(p.get("wa_id")) == wa_id)), {})
    return wa_id or _str(match.get("wa_id")), user_id or _str(match.get("user_id"))


def _profile_name(people: list[dict[str, Any]], wa_id: str | None, user_id: str | None) -> str | None:
    for wanted, key in ((user_id, "user_id"), (wa_id, "wa_id")):
        for person in people:
            if wanted and _str(person.get(key)) == wanted:
                name = _str(_dict(person.get("profile")).get("name"))
                if name:
                    return name
    return None


def _parse_message(msg: Any, phone_number_id: str, people: list[dict[str, Any]]) -> InboundMessage:
    if not isinstance(msg, dict):
        raise _Skip("a message must be an object")
    wamid = _str(msg.get("id"))
    if wamid is None:
        raise _Skip("a message needs an id")
    wa_id, user_id = _sender(msg, people)
    customer_id = user_id or wa_id
    if customer_id is None:
        raise _Skip("a message needs a sender: from, from_user_id, or a single contacts[] item")
    return InboundMessage(
        wamid=wamid,
        phone_number_id=phone_number_id,
        customer_id=customer_id,
        wa_id=wa_id,
        user_id=user_id,
        profile_name=_profile_name(people, wa_id, user_id),
        type=sys.intern(message_type(msg)),  # a few kinds, for thousands of waiting messages
        text=message_text(msg),
        payload=msg,
        timestamp=_int(msg.get("timestamp")),
        detail=message_detail(msg),
        context_wamid=_str(_dict(msg.get("context")).get("id")),
    )


def _parse_status(st: Any) -> StatusUpdate:
    if not isinstance(st, dict):
        raise _Skip("a status must be an object")
    wamid = _str(st.get("id"))
    status = _str(st.get("status"))
    if wamid is None or status is None:
        raise _Skip("a status needs an id and a status")
    code: int | None = None
    reason: str | None = None
    errors = st.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        err = errors[0]
        code = _int(err.get("code"))
        details = _str(_dict(err.get("error_data")).get("details"))
        reason = details or _str(err.get("message")) or _str(err.get("title"))
    return StatusUpdate(
        wamid=wamid,
        status=status,
        recipient=_str(st.get("recipient_user_id")) or _str(st.get("recipient_id")),
        timestamp=_int(st.get("timestamp")),
        error_code=code,
        error_reason=reason,
    )


def _parse_echo(echo: Any, phone_number_id: str) -> BusinessEcho:
    if not isinstance(echo, dict):
        raise _Skip("an echo must be an object")
    wamid = _str(echo.get("id"))
    wa_id = _str(echo.get("to"))
    user_id = _str(echo.get("to_user_id"))
    customer_id = user_id or wa_id
    if wamid is None or customer_id is None:
        raise _Skip("an echo needs an id and a recipient (to or to_user_id)")
    return BusinessEcho(
        wamid=wamid,
        phone_number_id=phone_number_id,
        customer_id=customer_id,
        wa_id=wa_id,
        user_id=user_id,
        type=message_type(echo),
        text=message_text(echo),
        timestamp=_int(echo.get("timestamp")),
    )


def _parse_template_update(value: dict[str, Any], waba_id: str | None) -> TemplateStatusUpdate:
    event = _str(value.get("event"))
    template_id = _str(value.get("message_template_id"))
    name = _str(value.get("message_template_name"))
    if event is None or (template_id is None and name is None):
        raise _Skip("a template status update needs an event and message_template_id or _name")
    # Meta sends reason "NONE" with approvals; PAUSED and DISABLED explain themselves in other_info.
    reason = _str(value.get("reason"))
    if reason is not None and reason.upper() == "NONE":
        reason = None
    reason = reason or _str(_dict(value.get("other_info")).get("description"))
    return TemplateStatusUpdate(
        waba_id=waba_id,
        template_id=template_id,
        name=name,
        language=_str(value.get("message_template_language")),
        event=event.upper(),
        reason=reason,
    )
