"""A fake WhatsApp Cloud API (Graph) server: message sends, read marks, media, and the WABA's templates."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .base import FakeServer, json_response, parse_json, parse_multipart
from .graph_shapes import check_interactive, check_template

API_VERSION = "v23.0"
TEXT_BODY_LIMIT = 4096
ERROR_TITLES = {
    100: "Invalid parameter",
    131009: "Parameter value is not valid",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132015: "Template is Paused",
    132016: "Template is Disabled",
}
RE_ENGAGEMENT_DETAILS = (
    "Message failed to send because more than 24 hours have passed since the customer last replied to this number."
)


@dataclass(frozen=True, slots=True)
class GraphFailure:
    """Make the next message send answer with this Graph error envelope and HTTP status."""

    http_status: int
    code: int
    message: str
    details: str = ""
    error_subcode: int | None = None

    @classmethod
    def re_engagement(cls, http_status: int = 400) -> GraphFailure:
        """131047: the 24-hour customer-service window is closed."""
        return cls(http_status, 131047, "Re-engagement message", RE_ENGAGEMENT_DETAILS)

    @classmethod
    def rate_limited(cls, http_status: int = 429) -> GraphFailure:
        """130429: Cloud API throughput reached."""
        return cls(http_status, 130429, "Rate limit hit", "Cloud API message throughput has been reached.", 2494055)

    @classmethod
    def server_error(cls, http_status: int = 500) -> GraphFailure:
        """131000: generic transient error."""
        return cls(http_status, 131000, "Something went wrong", "Something went wrong (fake).")


def graph_error(
    http_status: int,
    code: int,
    message: str,
    *,
    details: str | None = None,
    error_type: str = "OAuthException",
    error_subcode: int | None = None,
) -> web.Response:
    """A Graph error envelope `{"error": {message, type, code, error_data, fbtrace_id}}`."""
    error: dict[str, Any] = {
        "message": message if message.startswith("(#") else f"(#{code}) {message}",
        "type": error_type,
        "code": code,
    }
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if error_subcode is not None:
        error["error_subcode"] = error_subcode
    error["fbtrace_id"] = "AFAKE" + secrets.token_hex(10).upper()
    return json_response({"error": error}, status=http_status)


class FakeGraph(FakeServer):
    """Fake Graph API for WhatsApp: records sends in `sent`, read marks in `read_marks`, serves `media`.

    `templates` are the WABA's message templates, in the shape of Meta's `data[]` items (see
    `add_template`), served `templates_page_size` at a time; template sends are checked against them.
    """

    def __init__(self, *, seed: int = 0, api_version: str = API_VERSION) -> None:
        """Empty state; the bearer token defaults to `wa-test-token`."""
        super().__init__(seed=seed)
        self.api_version = api_version
        self.expected_token: str | None = "wa-test-token"
        self.phone_number_id: str | None = None
        self.sent: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.read_marks: list[dict[str, Any]] = []
        self.errors: deque[GraphFailure] = deque()
        self.hang_next: int = 0
        self.hang_seconds: float = 30.0
        self.media: dict[str, tuple[bytes, str]] = {}
        self.media_downloads: list[str] = []
        self.uploaded_media: list[str] = []
        self.waba_id: str | None = None
        self.templates: list[dict[str, Any]] = []
        self.templates_page_size = 2
        self._wamid_counter = 0
        self._media_counter = 0
        self._template_counter = 0

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v23.0` (the server's WHATSAPP_API_BASE)."""
        return f"{self.origin}/{self.api_version}"

    # -- public helpers ---------------------------------------------------------------------------------------
    def texts(self) -> list[str]:
        """Bodies of the successful text sends, in order."""
        return [m["text"]["body"] for m in self.sent if m.get("type") == "text"]

    def texts_to(self, recipient: str) -> list[str]:
        """Bodies of the successful text sends to `recipient` (matched against `to` or `recipient`)."""
        return [
            m["text"]["body"]
            for m in self.sent
            if m.get("type") == "text" and recipient in (m.get("to"), m.get("recipient"))
        ]

    def interactives(self) -> list[dict[str, Any]]:
        """The `interactive` objects of the successful interactive sends, in order."""
        return [dict(m["interactive"]) for m in self.sent if m.get("type") == "interactive"]

    def templates_sent(self) -> list[dict[str, Any]]:
        """The `template` objects of the successful template sends, in order."""
        return [dict(m["template"]) for m in self.sent if m.get("type") == "template"]

    def add_template(self, name: str, language: str, body: str, *, status: str = "APPROVED",
                     category: str = "UTILITY", header: str | None = None, footer: str | None = None,
                     buttons: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Add a template shaped like Meta's list items (`components` with upper-case types); returns it."""
        self._template_counter += 1
        components: list[dict[str, Any]] = []
        if header is not None:
            components.append({"type": "HEADER", "format": "TEXT", "text": header})
        components.append({"type": "BODY", "text": body})
        if footer is not None:
            components.append({"type": "FOOTER", "text": footer})
        if buttons:
            components.append({"type": "BUTTONS", "buttons": buttons})
        template = {"name": name, "language": language, "status": status, "category": category,
                    "components": components, "id": str(1000000000000100 + self._template_counter)}
        self.templates.append(template)
        return template

    def reactions(self) -> list[dict[str, Any]]:
        """The `reaction` objects (`{message_id, emoji}`) of the successful reaction sends, in order."""
        return [dict(m["reaction"]) for m in self.sent if m.get("type") == "reaction"]

    def add_media(self, media_id: str, data: bytes, mime_type: str) -> None:
        """Make `media_id` retrievable (same as assigning `media[media_id] = (data, mime_type)`)."""
        self.media[media_id] = (data, mime_type)

    async def wait_for_sent(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `n` messages were successfully sent; returns `sent`."""
        await self.wait_until(lambda: len(self.sent) >= n, timeout, f"{n} sent messages (have {len(self.sent)})")
        return list(self.sent)

    async def wait_for_read_marks(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `n` mark-as-read calls were received; returns `read_marks`."""
        await self.wait_until(lambda: len(self.read_marks) >= n, timeout, f"{n} read marks")
        return list(self.read_marks)

    # -- server plumbing ------------------------------------------------------------------------------------
    def _add_routes(self, app: web.Application) -> None:
        """Register the Graph routes."""
        version = self.api_version
        app.router.add_post(f"/{version}/{{phone_number_id}}/messages", self._messages)
        app.router.add_post(f"/{version}/{{phone_number_id}}/media", self._upload_media)
        app.router.add_get(f"/{version}/{{waba_id}}/message_templates", self._message_templates)
        app.router.add_get(f"/{version}/{{media_id}}", self._media_url)
        app.router.add_get("/download/{media_id}", self._download)

    def _check_auth(self, request: web.Request) -> web.StreamResponse | None:
        """401 (code 190) unless `Authorization: Bearer <expected_token>`."""
        if self.expected_token is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.expected_token}":
            return None
        return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")

    def _unknown_object(self, object_id: str, verb: str) -> web.Response:
        """Graph's answer for an id it does not know (code 100, subcode 33), with HTTP 404."""
        return graph_error(
            404,
            100,
            f"Unsupported {verb} request. Object with ID '{object_id}' does not exist, cannot be loaded due to "
            "missing permissions, or does not support this operation.",
            error_type="GraphMethodException",
            error_subcode=33,
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        """`POST /{version}/{phone_number_id}/messages`: a send or a mark-as-read."""
        await self.apply_latency()
        phone_number_id = request.match_info["phone_number_id"]
        if self.phone_number_id is not None and phone_number_id != self.phone_number_id:
            return self._unknown_object(phone_number_id, "post")
        body = parse_json(await request.read())
        if not isinstance(body, dict):
            return graph_error(400, 100, "Invalid parameter", details="The request body is not valid JSON.")
        if body.get("messaging_product") != "whatsapp":
            return graph_error(400, 100, "Invalid parameter", details="messaging_product must be 'whatsapp'.")
        record = {**body, "phone_number_id": phone_number_id}
        if body.get("status") == "read":
            self.attempts.append({**record, "outcome": "read"})
            if not body.get("message_id"):
                return graph_error(400, 100, "Invalid parameter", details="message_id is required.")
            self.read_marks.append(record)
            await self.notify()
            return json_response({"success": True})
        response = await self._send(record)
        await self.notify()
        return response

    async def _send(self, record: dict[str, Any]) -> web.Response:
        """Validate, apply error/hang injection and record one message send."""
        attempt = dict(record)
        self.attempts.append(attempt)
        to, recipient = record.get("to"), record.get("recipient")
        invalid = self._invalid(record)
        if invalid is not None:
            attempt["outcome"] = "invalid"
            http_status, code, details = invalid
            return graph_error(http_status, code, ERROR_TITLES[code], details=details)
        if self.hang_next > 0:
            self.hang_next -= 1
            attempt["outcome"] = "hang"
            await self.sleep_unless_closed(self.hang_seconds)
            return graph_error(503, 2, "Service temporarily unavailable", details="Hung by the fake.")
        if self.errors:
            failure = self.errors.popleft()
            attempt["outcome"] = "error"
            return graph_error(
                failure.http_status,
                failure.code,
                failure.message,
                details=failure.details,
                error_subcode=failure.error_subcode,
            )
        self._wamid_counter += 1
        wamid = f"wamid.FAKE_OUT_{self._wamid_counter}"
        attempt["outcome"] = "sent"
        self.sent.append({**record, "wamid": wamid})
        contact: dict[str, Any] = {"input": to or recipient}
        if to:
            contact["wa_id"] = to
        else:
            contact["user_id"] = recipient
        return json_response({"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": wamid}]})

    def _invalid(self, record: dict[str, Any]) -> tuple[int, int, str] | None:
        """(HTTP status, Graph code, details) for a send Meta would refuse, else None."""
        kind = record.get("type")
        if not record.get("to") and not record.get("recipient"):
            return 400, 100, "The parameter to is required."
        if not kind:
            return 400, 100, "The parameter type is required."
        if kind == "text":
            text = record.get("text")
            body = text.get("body") if isinstance(text, dict) else None
            if not isinstance(body, str) or not body:
                return 400, 100, "The parameter text['body'] is required."
            if len(body) > TEXT_BODY_LIMIT:
                return 400, 100, f"Param text['body'] must be at most {TEXT_BODY_LIMIT} characters long."
        if kind == "interactive":
            problem = check_interactive(record.get("interactive"))
            return None if problem is None else (400, *problem)
        if kind == "template":
            return check_template(record.get("template"), self.templates)
        return None

    async def _message_templates(self, request: web.Request) -> web.StreamResponse:
        """`GET /{version}/{waba_id}/message_templates?limit=&fields=&after=`: cursor pages of `templates`."""
        await self.apply_latency()
        waba_id = request.match_info["waba_id"]
        if self.waba_id is not None and waba_id != self.waba_id:
            return self._unknown_object(waba_id, "get")
        try:
            limit = int(request.query.get("limit", "25"))
            start = int(base64.urlsafe_b64decode(request.query["after"]).decode()) if "after" in request.query else 0
        except (ValueError, UnicodeDecodeError):
            return graph_error(400, 100, "Invalid parameter", details="limit or after is not valid.")
        size = max(1, min(limit, self.templates_page_size))
        fields = [f for f in request.query.get("fields", "").split(",") if f]
        page = self.templates[start : start + size]
        data = [{k: v for k, v in t.items() if not fields or k in fields or k == "id"} for t in page]

        def cursor(index: int) -> str:
            return base64.urlsafe_b64encode(str(index).encode()).decode()

        body: dict[str, Any] = {"data": data}
        if page:
            body["paging"] = {"cursors": {"before": cursor(start), "after": cursor(start + len(page))}}
            if start + len(page) < len(self.templates):
                query = {**request.query, "after": cursor(start + len(page))}
                body["paging"]["next"] = str(request.url.with_query(query))
        return json_response(body)

    async def _upload_media(self, request: web.Request) -> web.StreamResponse:
        """`POST /{version}/{phone_number_id}/media` (multipart: file, type, messaging_product) -> `{id}`."""
        await self.apply_latency()
        form = parse_multipart(request.headers.get("Content-Type", ""), await request.read())
        upload = form.get("file")
        if upload is None:
            return graph_error(400, 100, "Invalid parameter", details="The parameter file is required.")
        mime = form["type"].text if "type" in form else (upload.content_type or "application/octet-stream")
        self._media_counter += 1
        media_id = f"FAKE_MEDIA_{self._media_counter}"
        self.media[media_id] = (upload.data, mime)
        self.uploaded_media.append(media_id)
        await self.notify()
        return json_response({"id": media_id})

    async def _media_url(self, request: web.Request) -> web.StreamResponse:
        """`GET /{version}/{media_id}`: the media URL object, pointing at this server's `/download/`."""
        await self.apply_latency()
        media_id = request.match_info["media_id"]
        if media_id not in self.media:
            return self._unknown_object(media_id, "get")
        data, mime = self.media[media_id]
        return json_response(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.origin}/download/{media_id}",
                "mime_type": mime,
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": len(data),
                "id": media_id,
            }
        )

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """`GET /download/{media_id}`: the media bytes (bearer token required, like lookaside)."""
        await self.apply_latency()
        media_id = request.match_info["media_id"]
        if media_id not in self.media:
            return self._unknown_object(media_id, "get")
        data, mime = self.media[media_id]
        self.media_downloads.append(media_id)
        await self.notify()
        return web.Response(body=data, headers={"Content-Type": mime})
