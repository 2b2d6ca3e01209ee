"""Typed events parsed from Meta's webhook payloads (frozen dataclasses, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.domain.conversation import InboundMessage

__all__ = ["BusinessEcho", "InboundMessage", "PayloadError", "StatusUpdate", "WebhookBatch", "parse_webhook"]


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
class WebhookBatch:
    """Everything one POST carried, in payload order."""

    messages: list[InboundMessage]
    statuses: list[StatusUpdate]
    echoes: list[BusinessEcho]


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


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{where} must be a list")
    return value


def message_text(msg: dict[str, Any]) -> str | None:
    """The text a message carries for the model, for the types that are plain text at heart."""
    kind = msg.get("type")
    if kind == "text":
        return _str(_dict(msg.get("text")).get("body"))
    if kind == "interactive":
        inter = _dict(msg.get("interactive"))
        reply = _dict(inter.get("button_reply")) or _dict(inter.get("list_reply"))
        return _str(reply.get("title"))
    if kind == "button":
        button = _dict(msg.get("button"))
        return _str(button.get("text")) or _str(button.get("payload"))
    media = _dict(msg.get(kind)) if isinstance(kind, str) else {}
    return _str(media.get("caption"))


def parse_webhook(body: Any) -> WebhookBatch:
    """Walk entry[] × changes[] × messages[]/statuses[]/message_echoes[]; unknown fields are ignored."""
    if not isinstance(body, dict) or body.get("object") != "whatsapp_business_account":
        raise PayloadError('expected {"object": "whatsapp_business_account", "entry": [...]}')
    entries = _list(body.get("entry"), "entry")
    messages: list[InboundMessage] = []
    statuses: list[StatusUpdate] = []
    echoes: list[BusinessEcho] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise PayloadError("entry items must be objects")
        for change in _list(entry.get("changes"), "entry.changes"):
            if not isinstance(change, dict):
                raise PayloadError("changes items must be objects")
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            phone_number_id = _str(_dict(value.get("metadata")).get("phone_number_id"))
            field_name = change.get("field")
            if field_name == "messages":
                if phone_number_id is None:
                    raise PayloadError("value.metadata.phone_number_id is missing")
                names = _profile_names(value)
                for msg in _list(value.get("messages"), "value.messages"):
                    parsed = _parse_message(msg, phone_number_id, names)
                    if parsed is not None:
                        messages.append(parsed)
                for st in _list(value.get("statuses"), "value.statuses"):
                    status = _parse_status(st)
                    if status is not None:
                        statuses.append(status)
            elif field_name == "smb_message_echoes":
                if phone_number_id is None:
                    raise PayloadError("value.metadata.phone_number_id is missing")
                for echo in _list(value.get("message_echoes"), "value.message_echoes"):
                    parsed_echo = _parse_echo(echo, phone_number_id)
                    if parsed_echo is not None:
                        echoes.append(parsed_echo)
    return WebhookBatch(messages=messages, statuses=statuses, echoes=echoes)


def _profile_names(value: dict[str, Any]) -> dict[str, str]:
    names: dict[str, str] = {}
    for contact in _list(value.get("contacts"), "value.contacts"):
        if not isinstance(contact, dict):
            continue
        name = _str(_dict(contact.get("profile")).get("name"))
        if name is None:
            continue
        for key in ("user_id", "wa_id"):
            ident = _str(contact.get(key))
            if ident:
                names[ident] = name
    return names


def _parse_message(msg: Any, phone_number_id: str, names: dict[str, str]) -> InboundMessage | None:
    if not isinstance(msg, dict):
        raise PayloadError("messages items must be objects")
    wamid = _str(msg.get("id"))
    # Meta omits the phone for username users (and older payloads sent ""): treat both alike.
    wa_id = _str(msg.get("from"))
    user_id = _str(msg.get("from_user_id"))
    customer_id = user_id or wa_id
    kind = _str(msg.get("type")) or "unknown"
    if wamid is None or customer_id is None:
        raise PayloadError("a message needs an id and a sender (from or from_user_id)")
    return InboundMessage(
        wamid=wamid,
        phone_number_id=phone_number_id,
        customer_id=customer_id,
        wa_id=wa_id,
        user_id=user_id,
        profile_name=names.get(customer_id) or (names.get(wa_id) if wa_id else None),
        type=kind,
        text=message_text(msg),
        payload=msg,
        timestamp=_int(msg.get("timestamp")),
    )


def _parse_status(st: Any) -> StatusUpdate | None:
    if not isinstance(st, dict):
        raise PayloadError("statuses items must be objects")
    wamid = _str(st.get("id"))
    status = _str(st.get("status"))
    if wamid is None or status is None:
        raise PayloadError("a status needs an id and a status")
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


def _parse_echo(echo: Any, phone_number_id: str) -> BusinessEcho | None:
    if not isinstance(echo, dict):
        raise PayloadError("message_echoes items must be objects")
    wamid = _str(echo.get("id"))
    wa_id = _str(echo.get("to"))
    user_id = _str(echo.get("to_user_id"))
    customer_id = user_id or wa_id
    if wamid is None or customer_id is None:
        raise PayloadError("an echo needs an id and a recipient (to or to_user_id)")
    kind = _str(echo.get("type")) or "unknown"
    text = message_text(echo)
    if kind == "edit":
        text = message_text(_dict(_dict(echo.get("edit")).get("message")))
    return BusinessEcho(
        wamid=wamid,
        phone_number_id=phone_number_id,
        customer_id=customer_id,
        wa_id=wa_id,
        user_id=user_id,
        type=kind,
        text=text,
        timestamp=_int(echo.get("timestamp")),
    )
