"""A fake receiver of the server's outbound event webhooks (a CRM, n8n): checks each signature itself and
answers with the statuses it is told to (then 200)."""

from __future__ import annotations

import hashlib
import hmac
from collections import deque

import orjson
from aiohttp import web

from .base import FakeServer, RecordedRequest


class FakeHookReceiver(FakeServer):
    """POST /hook: records every delivery and whether its X-Bot-Signature-256 is right for `secret`."""

    def __init__(self) -> None:
        """Nothing received yet; every answer is 200 until `statuses` says otherwise."""
        super().__init__()
        self.secret = ""
        self.statuses: deque[int] = deque()
        self.received: list[tuple[RecordedRequest, bool, int]] = []  # request, signature valid, answer

    @property
    def url(self) -> str:
        """Where the endpoint is."""
        return f"{self.origin}/hook"

    def verify(self, body: bytes, header: str | None) -> bool:
        """The check a receiver does: HMAC-SHA256 of the raw body with the shared secret, compared in constant time."""
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return header is not None and hmac.compare_digest(expected, header)

    def delivered(self) -> list[dict[str, object]]:
        """The event bodies answered with a 2xx, in order."""
        return [orjson.loads(r.body) for r, _, status in self.received if 200 <= status < 300]

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/hook", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        recorded = self.requests[-1]
        status = self.statuses.popleft() if self.statuses else 200
        self.received.append((recorded, self.verify(body, request.headers.get("X-Bot-Signature-256")), status))
        await self.notify()
        return web.Response(status=status, text="ok" if status < 300 else "try later")
