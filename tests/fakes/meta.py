"""Builders for Meta webhook payloads (shapes of /work/shared/whatsapp-samples), signing and samples."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import orjson

WABA_ID = "100000000000000"
PHONE_NUMBER_ID = "100000000000001"
DISPLAY_PHONE_NUMBER = "15550001234"
SIGNATURE_HEADER = "X-Hub-Signature-256"


def samples_dir() -> Path:
    """The samples directory: `$BOT_SAMPLES_DIR`, else the copy kept in tests/fakes/samples.

    The files are the real-shaped Meta payloads of the project's shared/whatsapp-samples, copied so a
    clone runs its tests wherever it is checked out.
    """
    override = os.environ.get("BOT_SAMPLES_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "samples"


def load_sample(name: str) -> bytes:
    """The raw bytes of `<samples>/<name>.json` (pretty-printed, non-ASCII escaped, as stored)."""
    filename = name if name.endswith(".json") else f"{name}.json"
    return (samples_dir() / filename).read_bytes()


def load_sample_json(name: str) -> Any:
    """A sample, parsed."""
    return orjson.loads(load_sample(name))


def dumps(payload: Any, *, escape_unicode: bool = False) -> bytes:
    """Compact JSON bytes, as Meta sends them; `escape_unicode=True` writes non-ASCII as `\\uXXXX` like Meta."""
    if escape_unicode:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return orjson.dumps(payload)


def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex HMAC-SHA256 of body keyed with the app secret>` (the X-Hub-Signature-256 value)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(payload: Any, secret: str, *, escape_unicode: bool = False) -> tuple[bytes, dict[str, str]]:
    """Compact body bytes plus the headers (content type and signature) to POST it with."""
    body = dumps(payload, escape_unicode=escape_unicode)
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret)}


def webhook(
    value_items: dict[str, Any],
    *,
    field: str = "messages",
    phone_number_id: str = PHONE_NUMBER_ID,
    display_phone_number: str = DISPLAY_PHONE_NUMBER,
    waba_id: str = WABA_ID,
) -> dict[str, Any]:
    """Wrap value items (`contacts`, `messages`, `statuses`, ...) into a one-entry, one-change webhook."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id},
        **value_items,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value, "field": field}]}],
    }


def merge_entries(*payloads: dict[str, Any]) -> dict[str, Any]:
    """One webhook whose `entry[]` concatenates the entries of several (batched delivery)."""
    return {
        "object": "whatsapp_business_account",
        "entry": [entry for payload in payloads for entry in payload["entry"]],
    }


def _now() -> str:
    """Unix seconds as a string, like Meta's timestamps."""
    return str(int(time.time()))


def contact(wa_id: str | None, name: str = "Test User", user_id: str | None = None) -> dict[str, Any]:
    """A `contacts[]` item; `wa_id` None means a username user whose phone is withheld."""
    item: dict[str, Any] = {"profile": {"name": name}}
    if wa_id is not None:
        item["wa_id"] = wa_id
    if user_id is not None:
        item["user_id"] = user_id
    return item


def inbound_message(
    wamid: str,
    from_wa_id: str | None,
    msg_type: str,
    content: dict[str, Any],
    *,
    user_id: str | None = None,
    timestamp: str | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `messages[]` item of any type (`content` goes under the key named by `msg_type`)."""
    item: dict[str, Any] = {}
    if context is not None:
        item["context"] = context
    if from_wa_id is not None:
        item["from"] = from_wa_id
    if user_id is not None:
        item["from_user_id"] = user_id
    item |= {"id": wamid, "timestamp": timestamp or _now(), "type": msg_type, msg_type: content}
    return item


def text_message(
    wamid: str,
    from_wa_id: str | None,
    body: str,
    name: str = "Test User",
    phone_number_id: str = PHONE_NUMBER_ID,
    user_id: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A full inbound text webhook shaped like text.json (`from_wa_id` None: BSUID-only, needs `user_id`)."""
    if from_wa_id is None and user_id is None:
        raise ValueError("a message needs from_wa_id or user_id")
    message = inbound_message(wamid, from_wa_id, "text", {"body": body}, user_id=user_id, timestamp=timestamp)
    return webhook(
        {"contacts": [contact(from_wa_id, name, user_id)], "messages": [message]},
        phone_number_id=phone_number_id,
    )


def re_engagement_error() -> dict[str, Any]:
    """The `errors[]` item of a failed status for 131047 (as in status_failed_131047.json)."""
    return {
        "code": 131047,
        "title": "Re-engagement message",
        "message": "Re-engagement message",
        "error_data": {
            "details": "Message failed to send because more than 24 hours have passed since the customer "
            "last replied to this number."
        },
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }


def status_update(
    wamid_out: str,
    status: str,
    recipient_id: str,
    errors: list[dict[str, Any]] | None = None,
    timestamp: str | None = None,
    phone_number_id: str = PHONE_NUMBER_ID,
) -> dict[str, Any]:
    """A full status webhook (sent/delivered carry service pricing; failed carries `errors`)."""
    item: dict[str, Any] = {
        "id": wamid_out,
        "status": status,
        "timestamp": timestamp or _now(),
        "recipient_id": recipient_id,
    }
    if status in ("sent", "delivered"):
        item["pricing"] = {
            "billable": False,
            "pricing_model": "PMP",
            "type": "free_customer_service",
            "category": "service",
        }
    if errors is not None:
        item["errors"] = errors
    return webhook({"statuses": [item]}, phone_number_id=phone_number_id)
