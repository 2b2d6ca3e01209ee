"""Does the OpenAI key work? One cheap call (models.retrieve), its answer in words, cached for a while."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import openai
import structlog

from bot.ai.engine import AISettings, ClientLease

log = structlog.get_logger("bot.ai")

CACHE_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The outcome of one check: `ok` is None when nothing could be checked (no key)."""

    ok: bool | None
    message: str
    checked_at: float


def explain(exc: Exception, model: str) -> str:
    """An SDK error as a sentence a shop owner can act on."""
    if isinstance(exc, openai.AuthenticationError):
        return ("OpenAI rejected the key (401). Check that it was copied in full and has not been revoked, "
                "at platform.openai.com → API keys.")
    if isinstance(exc, openai.PermissionDeniedError):
        return (f"The key works, but this OpenAI project may not use model {model} (403). Allow the model in "
                "the project's limits, or choose another model.")
    if isinstance(exc, openai.NotFoundError):
        return f"The key works, but OpenAI has no model called {model} for it (404). Check the model name."
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            return "The key works, but the OpenAI account has no credit left (429). Add credit in Billing."
        return "The key works, but OpenAI is limiting requests right now (429). Try again in a minute."
    if isinstance(exc, openai.APITimeoutError):
        return "OpenAI did not answer in time. Check the server's internet connection and try again."
    if isinstance(exc, openai.APIConnectionError):
        return "Could not reach OpenAI. Check the server's internet connection (and OPENAI_BASE_URL if set)."
    if isinstance(exc, openai.APIStatusError):
        return f"OpenAI answered with an error (HTTP {exc.status_code}): {exc.message}"
    return f"The check failed unexpectedly: {type(exc).__name__}: {exc}"


class KeyChecker:
    """Checks a key and model; keeps each answer for CACHE_SECONDS so page loads never hammer OpenAI."""

    def __init__(self, *, client: ClientLease,
                 cache_seconds: float = CACHE_SECONDS, timeout_seconds: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[tuple[str, str | None, str], KeyCheck] = {}

    @staticmethod
    def _key(settings: AISettings) -> tuple[str, str | None, str]:
        # The key itself is never kept as a dict key: only its hash.
        return hashlib.sha256(settings.api_key.encode()).hexdigest(), settings.base_url, settings.model

    def cached(self, settings: AISettings) -> KeyCheck | None:
        """The last answer for this key and model, if still fresh."""
        found = self._cache.get(self._key(settings))
        if found is None or self._clock() - found.checked_at > self._cache_seconds:
            return None
        return found

    async def check(self, settings: AISettings, *, fresh: bool = False) -> KeyCheck:
        """Check the key and model (from the cache unless `fresh`)."""
        if not settings.api_key:
            return KeyCheck(None, "No OpenAI API key is set: enter one on the settings page or set OPENAI_API_KEY.",
                            self._clock())
        if not fresh and (hit := self.cached(settings)) is not None:
            return hit
        try:
            # A short timeout of its own: a page waits on this, unlike a customer's turn.
            async with self._client(settings) as client:
                await client.with_options(timeout=self._timeout).models.retrieve(settings.model)
        except openai.OpenAIError as exc:
            result = KeyCheck(False, explain(exc, settings.model), self._clock())
        else:
            result = KeyCheck(True, f"Connected: the key works and model {settings.model} is available.",
                              self._clock())
        log.info("openai_key_checked", ok=result.ok, model=settings.model)
        if len(self._cache) > 32:
            self._cache.clear()
        self._cache[self._key(settings)] = result
        return result
