"""Graph API client: text, interactive, template and reaction sends, mark-as-read with typing, media
download and the WABA's template list; one rate limit per business number for every send."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import aiohttp
import orjson

from bot.domain.conversation import Address, SendError

# Codes that will not clear by retrying: outside the 24 h window, undeliverable, bad recipient, etc.
FINAL_CODES = {131047, 131026, 131051, 131052, 131053, 131008, 131009, 131030, 100, 190, 10, 200, 133010}
# Throughput, spam-rate and pair-rate limits and Meta's own hiccups clear with time.
RETRYABLE_CODES = {130429, 131056, 131048, 131000, 131016, 2, 4, 80007, 133004}
TEMPLATE_FIELDS = "name,language,status,category,components"
MAX_TEMPLATE_PAGES = 1000  # a WABA may have a few thousand templates; a cursor that never ends is a bug


class GraphError(SendError):
    """A Graph call failed. `retryable` tells the caller whether trying again later can help."""

    def __init__(self, message: str, *, code: int | None, http_status: int | None, retryable: bool,
                 retry_after: float | None = None) -> None:
        super().__init__(message, code=code, retryable=retryable, retry_after=retry_after)
        self.http_status = http_status

    @property
    def reason(self) -> str:
        """A one-line reason with the code, for the outbox row and diagnostics."""
        prefix = f"Graph error {self.code}: " if self.code is not None else ""
        return prefix + str(self)


def address_fields(to: Address) -> dict[str, str]:
    """The addressing fields of a send body: a phone (`to`) or, for username users, a BSUID (`recipient`)."""
    if to.wa_id:
        return {"to": to.wa_id}
    if to.user_id:
        return {"recipient": to.user_id}
    raise ValueError("a recipient needs a phone number or a business-scoped user id")


Recipient = Address  # who a message goes to


class TokenBucket:
    """A token bucket: `rate` sends per second with bursts of the same size."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    async def take(self) -> None:
        """Wait until a token is free. Each caller reserves its token before sleeping, so order holds."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def classify(status: int, body: Any, retry_after: str | None) -> GraphError:
    """Turn a Graph error response into a GraphError by its error.code (the HTTP status is unreliable)."""
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    code = err.get("code") if isinstance(err.get("code"), int) else None
    details = err.get("error_data", {}).get("details") if isinstance(err.get("error_data"), dict) else None
    message = str(details or err.get("message") or f"HTTP {status}")
    if code in FINAL_CODES:
        retryable = False
    elif code in RETRYABLE_CODES or status >= 500 or status == 429:
        retryable = True
    else:
        retryable = False
    delay: float | None = None
    if retry_after:
        try:
            delay = float(retry_after)
        except ValueError:
            delay = None
    return GraphError(message, code=code, http_status=status, retryable=retryable, retry_after=delay)


class RateLimiter(Protocol):
    """Waits until one more message may go from a business number (BOT_SEND_RATE)."""

    async def take(self, phone_number_id: str) -> None:
        """Wait for one send's token."""
        ...


class LocalRate:
    """One token bucket per business number, in this process (the single-process mode)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._buckets: dict[str, TokenBucket] = {}

    async def take(self, phone_number_id: str) -> None:
        """Wait for one send's token."""
        bucket = self._buckets.get(phone_number_id)
        if bucket is None:
            bucket = self._buckets[phone_number_id] = TokenBucket(self._rate)
        await bucket.take()


class WhatsAppClient:
    """Posts to {api_base}/{phone_number_id}/messages with the bearer token."""

    def __init__(self, *, session: aiohttp.ClientSession, api_base: str, access_token: str,
                 send_rate: float, timeout: float, limiter: RateLimiter | None = None) -> None:
        self._session = session
        self._api_base = api_base.rstrip("/")
        self._token = access_token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # Several processes share one rate (bot/cluster/rate.py); one process keeps its own buckets.
        self.limiter: RateLimiter = limiter or LocalRate(send_rate)
        self._prepaid: dict[str, int] = {}  # tokens taken by `reserve`, not yet used by a post

    @property
    def configured(self) -> bool:
        """Whether an access token is set at all."""
        return bool(self._token)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}

    async def reserve(self, phone_number_id: str) -> None:
        """Wait for a send-rate token now; the next rate-limited post from that number goes without waiting.

        The actor paces before it marks a row `sending`: a crash while waiting for the rate then leaves
        the row `queued` (sent after the restart), not `unknown` (never resent).
        """
        await self.limiter.take(phone_number_id)
        self._prepaid[phone_number_id] = self._prepaid.get(phone_number_id, 0) + 1

    async def _post(self, phone_number_id: str, body: dict[str, Any], *, rate_limited: bool = True) -> Any:
        if rate_limited:
            if self._prepaid.get(phone_number_id, 0) > 0:
                self._prepaid[phone_number_id] -= 1
            else:
                await self.limiter.take(phone_number_id)
        url = f"{self._api_base}/{phone_number_id}/messages"
        try:
            async with self._session.post(
                url, data=orjson.dumps(body), headers=self._headers(), timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                try:
                    data = orjson.loads(raw) if raw else {}
                except orjson.JSONDecodeError:
                    data = {}
                if resp.status >= 400 or (isinstance(data, dict) and "error" in data):
                    raise classify(resp.status, data, resp.headers.get("Retry-After"))
                return data
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise GraphError(
                f"could not reach the Graph API ({type(exc).__name__})", code=None, http_status=None, retryable=True
            ) from exc

    async def _send(self, phone_number_id: str, to: Recipient, kind: str, content: dict[str, Any]) -> str:
        """Post one message of `kind` (its object under the key of that name) and return the new wamid."""
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", **address_fields(to), "type": kind,
                kind: content}
        data = await self._post(phone_number_id, body)
        try:
            return str(data["messages"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise GraphError("the Graph API answered without a message id", code=None, http_status=200,
                             retryable=False) from None

    async def send_text(self, phone_number_id: str, to: Recipient, text: str) -> str:
        """Send one text message (≤ 4096 characters); returns the new wamid."""
        return await self._send(phone_number_id, to, "text", {"preview_url": False, "body": text})

    async def send_interactive(self, phone_number_id: str, to: Recipient, body: dict[str, Any]) -> str:
        """Send reply buttons or a list: `body` is the `interactive` object (see bot.whatsapp.interactive)."""
        return await self._send(phone_number_id, to, "interactive", body)

    async def send_template(self, phone_number_id: str, to: Recipient, name: str, language: str,
                            components: list[dict[str, Any]]) -> str:
        """Send an approved template; `components` fill its variables (see bot.whatsapp.templates)."""
        template: dict[str, Any] = {"name": name, "language": {"code": language}}
        if components:  # a template without variables is sent without the key, as Meta's examples do
            template["components"] = components
        return await self._send(phone_number_id, to, "template", template)

    async def send_reaction(self, phone_number_id: str, to: Recipient, message_id: str, emoji: str) -> None:
        """React to a customer's message; an empty emoji removes the reaction."""
        await self._send(phone_number_id, to, "reaction", {"message_id": message_id, "emoji": emoji})

    async def mark_read(self, phone_number_id: str, message_id: str, *, typing: bool = True) -> None:
        """Mark a customer's message as read, showing the typing indicator until the reply."""
        body: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
        if typing:
            body["typing_indicator"] = {"type": "text"}
        await self._post(phone_number_id, body, rate_limited=False)

    async def _get(self, url: str, what: str, params: dict[str, str] | None = None) -> Any:
        """GET a Graph object as JSON; `what` names the call in errors ("media lookup", "template list")."""
        try:
            async with self._session.get(url, params=params, headers=self._headers(), timeout=self._timeout) as resp:
                data = orjson.loads(await resp.read() or b"{}")
                if resp.status >= 400:
                    raise classify(resp.status, data, resp.headers.get("Retry-After"))
                return data
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise GraphError(f"{what} failed ({type(exc).__name__})", code=None, http_status=None,
                             retryable=True) from exc

    async def media_url(self, media_id: str) -> dict[str, Any]:
        """Look up a media id: {url, mime_type, file_size, ...}."""
        data = await self._get(f"{self._api_base}/{media_id}", "media lookup")
        if not isinstance(data, dict) or "url" not in data:
            raise GraphError("media lookup answered without a url", code=None, http_status=200, retryable=False)
        return data

    async def list_templates(self, waba_id: str, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Every message template of the WhatsApp Business Account, following the cursor pages to the end.

        The next page is asked for by its `after` cursor on our own API base, never by fetching
        `paging.next` as given: that URL would get the bearer token wherever it pointed.
        """
        url = f"{self._api_base}/{waba_id}/message_templates"
        params = {"limit": str(page_size), "fields": TEMPLATE_FIELDS}
        templates: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(MAX_TEMPLATE_PAGES):
            page = _obj(await self._get(url, "template list", params))
            data = page.get("data")
            if not isinstance(data, list):
                raise GraphError("the template list answered without data", code=None, http_status=200,
                                 retryable=False)
            templates += [t for t in data if isinstance(t, dict)]
            paging = _obj(page.get("paging"))
            after = _obj(paging.get("cursors")).get("after")
            # Graph leaves out `next` on the last page (the `after` cursor may still be there).
            if not paging.get("next") or not isinstance(after, str) or not after or after in seen:
                return templates
            seen.add(after)
            params = {**params, "after": after}
        raise GraphError(f"the template list has more than {MAX_TEMPLATE_PAGES} pages", code=None,
                         http_status=200, retryable=False)

    async def download(self, url: str, *, max_bytes: int) -> bytes:
        """Download media with the bearer token, refusing anything larger than max_bytes."""
        try:
            async with self._session.get(url, headers=self._headers(), timeout=self._timeout) as resp:
                if resp.status >= 400:
                    raise GraphError(f"media download answered HTTP {resp.status}", code=None,
                                     http_status=resp.status, retryable=resp.status >= 500)
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise GraphError(f"media is larger than {max_bytes // 1_000_000} MB", code=None,
                                     http_status=resp.status, retryable=False)
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > max_bytes:
                        raise GraphError(f"media is larger than {max_bytes // 1_000_000} MB", code=None,
                                         http_status=resp.status, retryable=False)
                    chunks.append(chunk)
                return b"".join(chunks)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise GraphError(f"media download failed ({type(exc).__name__})", code=None, http_status=None,
                             retryable=True) from exc
