"""The Responses API loop: one customer turn in, one reply text out, tools called along the way."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2
import openai
import orjson
import structlog

from bot.ai.clients import ClientPool
from bot.ai.instructions import render_instructions, with_context
from bot.ai.privacy import Redactor, redact_deep
from bot.backoff import Backoff
from bot.domain.conversation import Session

log = structlog.get_logger("bot.ai")

# OpenAI keeps stored responses for 30 days; an older chain head is dead, so don't even try it.
CHAIN_MAX_AGE_SECONDS = 29.5 * 24 * 3600
_CITATION = re.compile(r"\s?【[^】]*】|\s?\[\d+:\d+†[^\]]*\]")


@dataclass(frozen=True, slots=True)
class AISettings:
    """What one turn runs with; stored settings may replace the env values between turns."""

    api_key: str
    base_url: str | None
    model: str
    instructions: str
    client_name: str
    extra_tools: tuple[dict[str, Any], ...] = ()
    # Function tools not to offer this turn (e.g. the local knowledge-base search while it is off).
    hidden_tools: frozenset[str] = frozenset()


# Engine.client: `async with lease(settings) as client:` holds an SDK client for the calls inside.
ClientLease = Callable[["AISettings"], AbstractAsyncContextManager[openai.AsyncOpenAI]]
# Keys and base URLs with a client kept open at once (a shop uses one; Test connection tries others).
MAX_CLIENTS = 8


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a turn's model calls used (input includes the cached part)."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.cached_tokens + other.cached_tokens,
                     self.output_tokens + other.output_tokens)


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """One function call the model asked for."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """The parts of a Responses API response the server uses, read straight from its JSON.

    The SDK's own parsing (pydantic models for every output item) and its request transform (a
    recursive walk over the tools' JSON schemas on every call) were a quarter of a turn's CPU
    (bench/README.md); the request and the response are plain JSON, so the engine posts and reads
    them as such through the SDK's `post`, keeping the SDK's authentication, errors and timeouts.
    """

    id: str
    status: str
    error: str | None
    calls: tuple[FunctionCall, ...]
    output_text: str
    usage: Usage

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelResponse:
        """Parse the response body."""
        calls: list[FunctionCall] = []
        texts: list[str] = []
        for item in data.get("output") or []:
            kind = item.get("type")
            if kind == "function_call":
                calls.append(FunctionCall(str(item.get("call_id")), str(item.get("name")),
                                          str(item.get("arguments") or "{}")))
            elif kind == "message":
                texts += [str(part.get("text") or "") for part in item.get("content") or []
                          if part.get("type") == "output_text"]
        usage = data.get("usage") or {}
        details = usage.get("input_tokens_details") or {}
        error = data.get("error")
        return cls(
            id=str(data.get("id")),
            status=str(data.get("status") or "completed"),
            error=str(error.get("message") or "no reason given") if isinstance(error, dict) else None,
            calls=tuple(calls),
            output_text="".join(texts),
            usage=Usage(int(usage.get("input_tokens") or 0), int(details.get("cached_tokens") or 0),
                        int(usage.get("output_tokens") or 0)),
        )


@dataclass(frozen=True, slots=True)
class TurnResult:
    """The reply text (possibly empty) and the response id that closes the turn."""

    text: str
    response_id: str | None
    new_chain: bool
    tool_calls: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""


class ToolRunner(Protocol):
    """What the engine needs from the tool registry."""

    def specs(self) -> list[dict[str, Any]]:
        """Function tool definitions for the Responses API."""
        ...

    async def call(self, name: str, arguments: str, context: Any) -> str:
        """Run one tool; returns the output string (errors become readable text, never exceptions)."""
        ...


class AIError(Exception):
    """A model call failed. `retryable` says whether waiting can help; `kind` names it for the errors table."""

    def __init__(self, message: str, *, kind: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after


def safety_identifier(session_id: str) -> str:
    """A stable hash of the session id (never the phone) for OpenAI's abuse monitoring."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def strip_citations(text: str) -> str:
    """Remove file_search citation markers, which mean nothing on WhatsApp."""
    return _CITATION.sub("", text)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return min(120.0, float(raw) * scale)
            except ValueError:
                continue
    return None


def classify(exc: Exception) -> AIError:
    """Map SDK exceptions to retryable or final errors with a reason a shop owner can act on."""
    if isinstance(exc, AIError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return AIError("OpenAI did not answer in time", kind="openai_timeout", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return AIError("could not connect to OpenAI", kind="openai_connection", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        code = exc.code or ""
        status = exc.status_code
        if status == 429 and code == "insufficient_quota":
            return AIError("the OpenAI account has no quota left: add credit or change the key",
                           kind="openai_quota", retryable=False)
        if status == 429:
            return AIError("OpenAI rate limit reached", kind="openai_rate_limit", retryable=True,
                           retry_after=_retry_after(exc))
        if status >= 500 or status in (408, 409):
            return AIError(f"OpenAI server error (HTTP {status})", kind="openai_server_error", retryable=True,
                           retry_after=_retry_after(exc))
        if status == 401:
            return AIError("OpenAI rejected the API key: check it on the settings page",
                           kind="openai_auth", retryable=False)
        if status == 403:
            return AIError("the OpenAI key may not use this model or endpoint", kind="openai_forbidden",
                           retryable=False)
        if status == 404:
            return AIError("OpenAI does not know this model or endpoint: check the model name",
                           kind="openai_not_found", retryable=False)
        return AIError(f"OpenAI refused the request (HTTP {status}, {code or 'no code'}): {exc.message}",
                       kind="openai_bad_request", retryable=False)
    return AIError(f"unexpected error calling OpenAI: {type(exc).__name__}: {exc}", kind="openai_unexpected",
                   retryable=False)


def _is_chain_lost(exc: Exception) -> bool:
    return isinstance(exc, openai.BadRequestError) and (
        exc.code == "previous_response_not_found" or "previous_response" in str(exc.param or "")
    )


class Engine:
    """Runs turns against the Responses API. Sees session ids and texts, never phone numbers."""

    def __init__(
        self,
        *,
        tools: ToolRunner,
        max_concurrent: int,
        backoff: Backoff,
        timeout_seconds: float,
        max_tool_rounds: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_model_call: Callable[[float], None] | None = None,
    ) -> None:
        self.tools = tools
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._backoff = backoff
        self._timeout = timeout_seconds
        self._max_rounds = max_tool_rounds
        self._sleep = sleep
        self._on_model_call = on_model_call
        self._clients = ClientPool(self._new_client, size=MAX_CLIENTS)
        self.in_flight = 0

    def _new_client(self, api_key: str, base_url: str | None) -> openai.AsyncOpenAI:
        # Retries are ours (backoff and budget), so the SDK's are off. The SDK's aiohttp transport: its
        # default (httpcore over anyio) spent more CPU per call than the rest of a turn together, most
        # of it scanning its connection pool (bench/README.md).
        timeout = httpx2.Timeout(self._timeout, connect=10.0)
        return openai.AsyncOpenAI(api_key=api_key or "missing-key", base_url=base_url, max_retries=0, timeout=timeout,
                                  http_client=openai.DefaultAioHttpClient(timeout=timeout))

    def client(self, settings: AISettings) -> AbstractAsyncContextManager[openai.AsyncOpenAI]:
        """The SDK client for this key and base URL, leased: `async with engine.client(s) as client:`."""
        return self._clients.lease(settings.api_key, settings.base_url)

    async def warm_up(self, settings: AISettings) -> None:
        """Make the SDK client for these settings now (its TLS context and lazy imports take ~0.1 s of CPU),
        at start-up rather than in the first turn, where it would stall every webhook's acknowledgement."""
        async with self.client(settings):
            pass

    async def close(self) -> None:
        """Close every SDK client."""
        await self._clients.close()

    async def _create(self, settings: AISettings, **params: Any) -> ModelResponse:
        """One POST /responses with backoff on transient errors; chain loss is raised untouched."""
        if not settings.api_key and not settings.base_url:
            # OpenAI refuses every call without a key: say so at once instead of retrying for minutes.
            raise AIError("no OpenAI API key is set (OPENAI_API_KEY, or the settings page)", kind="openai_auth",
                          retryable=False)
        async with self.client(settings) as client:
            return await self._create_with(client, **params)

    async def _create_with(self, client: openai.AsyncOpenAI, **params: Any) -> ModelResponse:
        body = {k: v for k, v in params.items() if v is not None}
        attempt = 0
        first_try = time.monotonic()
        while True:
            attempt += 1
            try:
                async with self._semaphore:
                    self.in_flight += 1
                    started = time.monotonic()
                    try:
                        raw = await client.post("/responses", content=orjson.dumps(body), cast_to=httpx2.Response,
                                                options={"headers": {"Content-Type": "application/json"}})
                        return ModelResponse.from_json(orjson.loads(raw.content))
                    finally:
                        self.in_flight -= 1
                        if self._on_model_call is not None:
                            self._on_model_call(time.monotonic() - started)
            except Exception as exc:
                if _is_chain_lost(exc):
                    raise
                error = classify(exc)
                if not error.retryable or self._backoff.exhausted(attempt, first_try):
                    if error.retryable:
                        error = AIError(f"{error} (gave up after {attempt} tries)", kind=error.kind,
                                        retryable=False)
                    raise error from exc
                delay = self._backoff.delay(attempt, error.retry_after)
                log.warning("model_call_retried", attempt=attempt, delay=round(delay, 2), error=str(error))
                await self._sleep(delay)

    async def respond(
        self,
        session: Session,
        input_items: Sequence[dict[str, Any]],
        *,
        settings: AISettings,
        redact: Redactor,
        tool_context: Any,
        context_lines: list[str] | None = None,
        history: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
        spent: Callable[[Usage], None] | None = None,
    ) -> TurnResult:
        """Run one turn: the customer's items in, the model's final text out, tools in between.

        `spent` hears of every response OpenAI billed, as it comes: a turn that fails or is cancelled
        after some calls has still cost them.
        """
        account = spent or (lambda usage: None)
        instructions = redact(
            with_context(render_instructions(settings.instructions, settings.client_name),
                         language=session.language, extra=context_lines)
        )
        tools = [
            *(spec for spec in self.tools.specs() if spec.get("name") not in settings.hidden_tools),
            *settings.extra_tools,
        ]
        base: dict[str, Any] = {
            "model": settings.model,
            "instructions": instructions,
            "safety_identifier": safety_identifier(session.session_id),
            "prompt_cache_key": safety_identifier(session.session_id),
            "truncation": "auto",
            "store": True,
        }
        if tools:
            base["tools"] = tools
            base["parallel_tool_calls"] = True
        items = redact_deep(list(input_items), redact)
        previous = session.previous_response_id
        age = time.time() - (session.previous_response_at or time.time())
        if previous and age > CHAIN_MAX_AGE_SECONDS:
            previous = None
        new_chain = previous is None
        try:
            response = await self._create(settings, **base, input=items, previous_response_id=previous)
        except openai.BadRequestError:
            # The stored chain is gone (expired or deleted): start again, with recent history if any.
            log.info("chain_restarted", reason="previous_response_not_found")
            new_chain = True
            earlier = redact_deep(await history(), redact) if history else []
            try:
                response = await self._create(settings, **base, input=[*earlier, *items])
            except openai.BadRequestError as exc:
                raise classify(exc) from exc
        account(response.usage)
        called: list[str] = []
        usage = response.usage
        for _round in range(self._max_rounds + 1):
            calls = response.calls
            if not calls:
                break
            called.extend(call.name for call in calls)
            last_round = _round >= self._max_rounds
            if last_round:
                outputs = ["Tool call limit reached for this turn: answer the customer with what you know."
                           for _ in calls]
            else:
                outputs = await asyncio.gather(
                    *(self.tools.call(call.name, call.arguments, tool_context) for call in calls)
                )
            follow_up = [
                {"type": "function_call_output", "call_id": call.call_id, "output": redact(str(output))}
                for call, output in zip(calls, outputs, strict=True)
            ]
            params = dict(base)
            if last_round:
                params["tool_choice"] = "none"
            try:
                response = await self._create(settings, **params, input=follow_up, previous_response_id=response.id)
            except openai.BadRequestError as exc:
                raise classify(exc) from exc
            account(response.usage)
            usage += response.usage
        if response.status == "failed":
            raise AIError(f"the model failed: {response.error or 'no reason given'}",
                          kind="openai_response_failed", retryable=False)
        text = strip_citations(response.output_text).strip()
        return TurnResult(text=text, response_id=response.id, new_chain=new_chain, tool_calls=called, usage=usage,
                          model=settings.model)

    async def transcribe(self, settings: AISettings, data: bytes, mime: str, filename: str, model: str) -> str:
        """Speech to text through OpenAI's transcription endpoint (voice notes are ogg/opus)."""
        try:
            async with self.client(settings) as client, self._semaphore:
                result = await client.audio.transcriptions.create(model=model, file=(filename, data, mime))
        except Exception as exc:
            raise classify(exc) from exc
        return str(getattr(result, "text", "") or "")
