"""Turning stored customer messages of every WhatsApp type into something the model can read."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from bot.domain.conversation import InboundMessage, SendError

# The kinds understood from the message's text alone: their raw payload is not read.
TEXT_KINDS = frozenset({"text", "interactive", "button"})

log = structlog.get_logger("bot.media")

MAX_MEDIA_BYTES = 16 * 1024 * 1024
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif"}


class MediaSource(Protocol):
    """The Graph media endpoints."""

    async def media_url(self, media_id: str) -> dict[str, Any]:
        """Look up a media id."""
        ...

    async def download(self, url: str, *, max_bytes: int) -> bytes:
        """Download media bytes with the bearer token."""
        ...


Transcriber = Callable[[bytes, str, str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Understood:
    """What one message gives the turn."""

    text: str | None = None
    image_data_url: str | None = None
    fixed_reply: str | None = None  # key into bot.texts when the model cannot help with this message
    no_reply: bool = False  # e.g. a reaction: stored, nothing to answer
    problem: str | None = None  # a failure worth recording (download failed, too large…)
    transcript: str | None = None


def _media(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    value = payload.get(kind)
    return value if isinstance(value, dict) else {}


def describe_location(loc: dict[str, Any]) -> str:
    """A location as one line of text."""
    parts = [str(loc[k]) for k in ("name", "address") if loc.get(k)]
    where = ", ".join(parts)
    coords = f"{loc.get('latitude')}, {loc.get('longitude')}"
    return f"[The customer shared a location: {where + ' ' if where else ''}({coords})]"


def describe_contacts(contacts: Any) -> str:
    """Shared contact cards by name only: their phone numbers never go to the model."""
    names: list[str] = []
    for card in contacts if isinstance(contacts, list) else []:
        if isinstance(card, dict):
            name: dict[str, Any] = card["name"] if isinstance(card.get("name"), dict) else {}
            formatted = name.get("formatted_name") or " ".join(
                str(name[k]) for k in ("first_name", "last_name") if name.get(k)
            )
            org = card.get("org", {}).get("company") if isinstance(card.get("org"), dict) else None
            names.append(f"{formatted}{f' ({org})' if org else ''}" or "a contact")
    listed = "; ".join(names) or "a contact"
    return f"[The customer shared a contact card: {listed}. Phone numbers are withheld for privacy.]"


class MediaReader:
    """Reads one customer message into an Understood, downloading and transcribing where needed."""

    def __init__(self, *, source: MediaSource, transcribe: Transcriber | None,
                 max_bytes: int = MAX_MEDIA_BYTES) -> None:
        self._source = source
        self._transcribe = transcribe
        self._max_bytes = max_bytes

    async def _fetch(self, media: dict[str, Any]) -> tuple[bytes, str]:
        media_id = media.get("id")
        if not isinstance(media_id, str) or not media_id:
            raise SendError("the message has no media id")
        info = await self._source.media_url(media_id)
        size = info.get("file_size")
        if isinstance(size, int | str) and str(size).isdigit() and int(size) > self._max_bytes:
            raise SendError(f"the file is larger than {self._max_bytes // (1024 * 1024)} MB")
        data = await self._source.download(str(info["url"]), max_bytes=self._max_bytes)
        mime = str(info.get("mime_type") or media.get("mime_type") or "application/octet-stream")
        return data, mime

    async def read(self, message: InboundMessage) -> Understood:
        """Understand one stored message."""
        payload = message.payload
        kind = message.type
        if kind in TEXT_KINDS:
            return Understood(text=message.text) if message.text else Understood(fixed_reply="unsupported")
        if kind == "reaction":
            return Understood(no_reply=True)
        if kind == "image":
            media = _media(payload, "image")
            caption = media.get("caption") if isinstance(media.get("caption"), str) else None
            try:
                data, mime = await self._fetch(media)
            except SendError as exc:
                log.warning("media_download_failed", kind=kind, reason=exc.reason)
                return Understood(fixed_reply="media_failed", problem=f"image download failed: {exc.reason}")
            if mime.split(";")[0].strip() not in IMAGE_TYPES:
                return Understood(fixed_reply="unsupported", problem=f"image type {mime} is not supported")
            url = f"data:{mime.split(';')[0].strip()};base64,{base64.b64encode(data).decode()}"
            return Understood(text=caption or "[The customer sent a photo.]", image_data_url=url)
        if kind == "audio":
            media = _media(payload, "audio")
            if self._transcribe is None:
                return Understood(fixed_reply="unsupported")
            try:
                data, mime = await self._fetch(media)
                transcript = (await self._transcribe(data, mime, "voice.ogg")).strip()
            except SendError as exc:
                log.warning("media_download_failed", kind=kind, reason=exc.reason)
                return Understood(fixed_reply="media_failed", problem=f"voice note download failed: {exc.reason}")
            except Exception as exc:
                log.warning("transcription_failed", error=str(exc))
                return Understood(fixed_reply="media_failed", problem=f"transcription failed: {exc}")
            if not transcript:
                return Understood(fixed_reply="media_failed", problem="the voice note had no speech")
            return Understood(text=transcript, transcript=transcript)
        if kind == "location":
            return Understood(text=describe_location(_media(payload, "location")))
        if kind == "contacts":
            return Understood(text=describe_contacts(payload.get("contacts")))
        if kind == "document":
            doc = _media(payload, "document")
            name = doc.get("filename") or "a file"
            caption = f" with the note: {doc['caption']}" if doc.get("caption") else ""
            return Understood(text=f"[The customer sent a document: {name}{caption}]")
        if kind == "sticker":
            return Understood(text="[The customer sent a sticker.]")
        return Understood(fixed_reply="unsupported")
