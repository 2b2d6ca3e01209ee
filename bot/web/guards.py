"""Guards every route shares: request bodies that stall or cannot be decoded get a 4xx, and JSON API
answers stay out of caches.

The header side of a slow client is bounded by the server itself (bot/cli.py): aiohttp closes a
connection that has not sent a whole request head within its keep-alive timeout.
"""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader, hdrs, web
from aiohttp.typedefs import Handler

from bot.web.auth import streams_body
from bot.web.keys import CONFIG

# What aiohttp decodes itself; anything else would reach the handlers still compressed.
DECODABLE = frozenset({"", "identity", "gzip", "deflate"})
_API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class BodyTimeout(Exception):
    """The request body stopped arriving."""


class _BodyWatch:
    """Fails the reads of a request body that makes no progress for `idle` seconds, or is not
    complete after `total` seconds (None: no total, for uploads streamed to disk)."""

    def __init__(self, content: StreamReader, *, idle: float, total: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._content = content
        self._idle = idle
        self._deadline = None if total is None else self._loop.time() + total
        self._seen = content.total_raw_bytes
        self._handle = self._loop.call_later(self._next_delay(), self._check)

    def _next_delay(self) -> float:
        if self._deadline is None:
            return self._idle
        return max(0.0, min(self._idle, self._deadline - self._loop.time()))

    def _check(self) -> None:
        content = self._content
        if content.is_eof():
            return
        stalled = content.total_raw_bytes == self._seen
        if stalled or (self._deadline is not None and self._loop.time() >= self._deadline):
            content.set_exception(BodyTimeout())
            return
        self._seen = content.total_raw_bytes
        self._handle = self._loop.call_later(self._next_delay(), self._check)

    def cancel(self) -> None:
        self._handle.cancel()


def _refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _give_up(request: web.Request, status: int, message: str) -> web.Response:
    """Refuse a request whose body cannot be read, and close its connection after the answer."""
    # Marked as ended: otherwise aiohttp would try to read (and drain) the broken body once more
    # after the answer and log the same failure again as an unhandled error. Whatever of it is still
    # on the way, nobody will read, so the connection must not be used again.
    request.content.feed_eof()
    response = _refuse(status, message)
    response.force_close()
    return response


@web.middleware
async def body_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse bodies that cannot be decoded (415, 400) or that stall (408), before any handler sees them."""
    if not request.body_exists:
        return await handler(request)
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if encoding not in DECODABLE:
        return _refuse(415, f"Content-Encoding {encoding[:40]!r} is not supported: send the body "
                            "uncompressed, or compressed with gzip or deflate")
    timeout = request.app[CONFIG].body_timeout_seconds
    streaming = streams_body(request.match_info.handler)
    watch = _BodyWatch(request.content, idle=timeout, total=None if streaming else timeout)
    try:
        return await handler(request)
    except BodyTimeout:
        return _give_up(request, 408, f"the request body did not arrive within {timeout:g} seconds")
    except web.RequestPayloadError:
        # aiohttp found the body broken: not the gzip/deflate it claimed to be, or cut short.
        what = f"it is not valid {encoding} data" if encoding not in ("", "identity") else "it was cut short"
        return _give_up(request, 400, f"the request body could not be read: {what}")
    finally:
        watch.cancel()


async def api_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every /api/* answer: not stored by caches, never content-sniffed (unless a route set its own)."""
    if request.path.startswith("/api/"):
        for name, value in _API_HEADERS.items():
            response.headers.setdefault(name, value)


def install(app: web.Application) -> None:
    """Add the guards; call it before any other middleware, so they see every request first."""
    app.middlewares.append(body_guard)
    app.on_response_prepare.append(api_headers)
