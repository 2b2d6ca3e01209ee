"""Delivery of outbound events to the endpoints other systems configured (a CRM, n8n, Zapier).

Each event is POSTed as `{"id", "kind", "created_at", "data"}`, signed like Meta signs its webhooks:
`X-Bot-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the endpoint's secret>`. A delivery is
retried with exponential backoff until the endpoint answers 2xx (or, after GIVE_UP_SECONDS, marked
failed). The queue is durable (bot/persistence/webhooks.py) and claimed with a compare-and-set, so
several processes on one PostgreSQL can each run a worker: delivery is at least once, never twice at
the same moment, and not ordered. Receivers dedupe on `id`.

The worker is one background task, owned by `EventDelivery` (started and stopped by its cleanup_ctx).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from contextlib import suppress
from typing import Any

import aiohttp
import orjson
import structlog

from bot.backoff import Backoff
from bot.configuration.secrets import SecretBox, SecretUnreadable
from bot.domain.background import Background
from bot.persistence.webhooks import Claimed, WebhookRepo

log = structlog.get_logger("bot.integrations.webhooks")

SIGNATURE_HEADER = "X-Bot-Signature-256"
GIVE_UP_SECONDS = 72 * 3600
KEEP_SECONDS = 30 * 86400  # finished deliveries are kept this long for the settings page
MAX_RETRY_DELAY = 3600.0
MIN_WAIT = 0.02


def signature(secret: str, body: bytes) -> str:
    """The `X-Bot-Signature-256` value of a body: `sha256=` and the hex HMAC-SHA256 with the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def event_body(claim: Claimed) -> bytes:
    """The JSON a delivery POSTs; the same bytes on every attempt."""
    return orjson.dumps({"id": claim.event_id, "kind": claim.kind, "created_at": claim.event_created_at,
                         "data": orjson.Fragment(claim.payload)})


class EventDelivery:
    """POSTs the due deliveries (queued with their events, bot.persistence.events), from a background task."""

    def __init__(self, *, repo: WebhookRepo, session: aiohttp.ClientSession, box: SecretBox, backoff: Backoff,
                 poll_seconds: float = 1.0, lease_seconds: float = 60.0,
                 timeout_seconds: float = 10.0, concurrency: int = 8, user_agent: str = "bot") -> None:
        self.repo = repo
        self.box = box
        self._session = session
        self._backoff = backoff
        self._poll = poll_seconds
        self._lease = lease_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._limit = asyncio.Semaphore(concurrency)
        self._user_agent = user_agent
        self._poked = asyncio.Event()
        self._worker = Background(self._run, "event-delivery")
        self._last_prune = 0.0

    def start(self) -> None:
        """Start the worker task."""
        self._worker.start()

    async def stop(self) -> None:
        """Stop the worker; a POST in flight is abandoned (its claim runs out and it is sent again later)."""
        await self._worker.stop()

    def poke(self) -> None:
        """Look for due deliveries now rather than at the next poll (e.g. after an event was recorded)."""
        self._poked.set()

    async def run_once(self, now: float | None = None) -> int:
        """Attempt every due delivery once; returns how many were attempted."""
        now = now or time.time()
        attempted = 0
        while True:
            ids = await self.repo.due(now=now, limit=50)
            claims = [c for c in [await self.repo.claim(i, now=now, lease=self._lease) for i in ids] if c is not None]
            if not claims:
                break
            await asyncio.gather(*(self._deliver(c) for c in claims))
            attempted += len(claims)
            if len(ids) < 50:
                break
        if now - self._last_prune > 3600:
            self._last_prune = now
            await self.repo.prune(before=now - KEEP_SECONDS)
        return attempted

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
                due = await self.repo.next_due_at()
            except Exception as exc:  # the database is away, say: try again at the next poll
                log.warning("event_delivery_failed", error=str(exc))
                due = None
            # At least MIN_WAIT: a delivery another worker holds, or one that cannot be claimed, must not spin us.
            wait = self._poll if due is None else max(MIN_WAIT, min(self._poll, due - time.time()))
            self._poked.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), wait)

    async def _deliver(self, claim: Claimed) -> None:
        async with self._limit:
            status, error = await self._post(claim)
        now = time.time()
        if status is not None and 200 <= status < 300:
            await self.repo.delivered(claim, status, now=now)
            log.info("event_delivered", event_id=claim.event_id, kind=claim.kind, attempts=claim.attempts)
            return
        give_up = now - claim.created_at > GIVE_UP_SECONDS
        delay = min(MAX_RETRY_DELAY, self._backoff.delay(claim.attempts))
        await self.repo.failed(claim, status, error, retry_at=None if give_up else now + delay)
        log.warning("event_delivery_refused", event_id=claim.event_id, kind=claim.kind, status=status, error=error,
                    attempts=claim.attempts, gave_up=give_up)

    async def _post(self, claim: Claimed) -> tuple[int | None, str]:
        """One attempt: the answer's status (None: no answer) and, unless 2xx, what went wrong."""
        try:
            secret = self.box.decrypt(claim.secret_enc)
        except SecretUnreadable:
            return None, ("the signing secret cannot be decrypted (the server's secret key changed): "
                          "add the endpoint again")
        body = event_body(claim)
        headers: dict[str, Any] = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            SIGNATURE_HEADER: signature(secret, body),
            "X-Bot-Event": claim.kind,
            "X-Bot-Delivery": str(claim.id),
        }
        try:
            async with self._session.post(claim.url, data=body, headers=headers, timeout=self._timeout,
                                          allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return response.status, ""
                text = (await response.content.read(300)).decode(errors="replace").strip()
                return response.status, f"HTTP {response.status}" + (f": {text}" if text else "")
        except TimeoutError:
            return None, f"no answer within {self._timeout.total:g} seconds"
        except aiohttp.ClientError as exc:
            return None, f"could not reach the endpoint: {exc.__class__.__name__}: {exc}"[:300]
