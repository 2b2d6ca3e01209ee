"""Shared machinery for the fake HTTP servers: lifecycle, request recording, latency and waiting."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request exactly as a fake server received it."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    json: Any | None

    @property
    def path_qs(self) -> str:
        """Path plus `?query` when there is one."""
        return f"{self.path}?{self.query_string}" if self.query_string else self.path

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class FormPart:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def text(self) -> str:
        """The part decoded as UTF-8."""
        return self.data.decode("utf-8", errors="replace")


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


def parse_json(body: bytes) -> Any | None:
    """Parse a JSON body; None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def parse_multipart(content_type: str, body: bytes) -> dict[str, FormPart]:
    """Split a multipart/form-data body into its parts, byte-exact (last part wins for a repeated name)."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        return {}
    parts: dict[str, FormPart] = {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        raw_headers, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        part_headers = Message()
        for line in raw_headers.decode("utf-8", errors="replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                part_headers[key.strip()] = value.strip()
        name = part_headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = part_headers.get_filename()
        parts[name] = FormPart(name, filename, part_headers.get("content-type"), data)
    return parts


class FakeServer:
    """Base class: an aiohttp app on 127.0.0.1 (ephemeral port) that records every request it receives."""

    def __init__(self, *, seed: int = 0) -> None:
        """Set up empty state; the server is not listening until `start()`."""
        self.requests: list[RecordedRequest] = []
        self.latency: float | tuple[float, float] = 0.0
        self.rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind to 127.0.0.1 on a free port and start serving."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._closing.clear()
        app = web.Application(middlewares=[self._make_middleware()], client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving; pending hangs are released immediately. Safe to call twice."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the server."""
        await self.close()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://{HOST}:{self.port}"

    # -- recording ---------------------------------------------------------------------------------------
    def all_traffic_text(self) -> str:
        """Every request (method, full URL, headers, body decoded with errors='replace') as one string."""
        chunks: list[str] = []
        for rec in self.requests:
            lines = [f"{rec.method} {self.origin}{rec.path_qs}"]
            lines += [f"{k}: {v}" for k, v in rec.headers.items()]
            lines += ["", rec.body.decode("utf-8", errors="replace"), ""]
            chunks.append("\n".join(lines))
        return "\n".join(chunks)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        """Wait (without polling) until `predicate()` holds after some recorded change, or raise TimeoutError."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(predicate)
        except TimeoutError:
            label = what or getattr(predicate, "__name__", "condition")
            raise TimeoutError(f"{type(self).__name__}: timed out after {timeout}s waiting for {label}") from None

    async def notify(self) -> None:
        """Wake up every `wait_until` waiter so it re-checks its predicate."""
        async with self._changed:
            self._changed.notify_all()

    # -- helpers for subclasses -----------------------------------------------------------------------------
    async def apply_latency(self) -> None:
        """Sleep for the configured latency (a fixed value or uniform in a (low, high) range)."""
        latency = self.latency
        seconds = self.rng.uniform(*latency) if isinstance(latency, tuple) else latency
        if seconds > 0:
            await self.sleep_unless_closed(seconds)

    async def sleep_unless_closed(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns True if it was cut short because the server is closing."""
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            return False
        return True

    def _add_routes(self, app: web.Application) -> None:
        """Register the fake's routes (subclasses override)."""

    def _check_auth(self, request: web.Request) -> web.StreamResponse | None:
        """Return an error response to reject the request, or None to let it through."""
        return None

    def _extra_headers(self) -> dict[str, str]:
        """Headers added to every response."""
        return {}

    def _make_middleware(self) -> Any:
        """The middleware that records each request, checks auth and decorates the response."""

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            body = await request.read()
            headers: dict[str, str] = {}
            for key, value in request.headers.items():
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query_string=request.query_string,
                    headers=headers,
                    body=body,
                    json=parse_json(body) if "json" in request.content_type else None,
                )
            )
            await self.notify()
            response = self._check_auth(request)
            if response is None:
                response = await handler(request)
            for key, value in self._extra_headers().items():
                response.headers.setdefault(key, value)
            return response

        return middleware
