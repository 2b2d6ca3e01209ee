"""The conversation actor: one customer's turns, one at a time, from inbox rows to a sent reply."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from bot.actors.base import Actor
from bot.ai.engine import AIError, Engine, Session, TurnResult
from bot.ai.language import detect_language
from bot.ai.privacy import make_redactor, mask_phone
from bot.persistence import Repositories
from bot.persistence.conversations import Conversation
from bot.persistence.inbox import InboxRow
from bot.persistence.outbox import OutboxRow
from bot.settings import RuntimeSettings, SettingsSource
from bot.texts import text as fixed_text
from bot.whatsapp.client import GraphError, Recipient
from bot.whatsapp.text import split_text

log = structlog.get_logger("bot.conversation")

ConversationKey = tuple[str, str]  # (business phone_number_id, customer id)

# A burst never grows past this, however chatty the customer: the reply must come eventually.
MAX_BURST_SECONDS = 10.0
MAX_BURST_MESSAGES = 30


@dataclass(frozen=True, slots=True)
class Inbound:
    """A customer message was stored in the inbox."""

    inbox_id: int


@dataclass(frozen=True, slots=True)
class Flush:
    """Send whatever this conversation has queued in the outbox."""


class Sender(Protocol):
    """The Graph API calls a conversation makes."""

    async def send_text(self, phone_number_id: str, to: Recipient, text: str) -> str:
        """Send a text; returns the wamid."""
        ...

    async def send_reaction(self, phone_number_id: str, to: Recipient, message_id: str, emoji: str) -> None:
        """React to a message."""
        ...

    async def mark_read(self, phone_number_id: str, message_id: str, *, typing: bool = True) -> None:
        """Mark read and show typing."""
        ...


ToolContextFactory = Callable[[Conversation, str | None], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ConversationDeps:
    """Everything a conversation actor uses, injected by the composition root."""

    repos: Repositories
    engine: Engine
    sender: Sender
    settings: SettingsSource
    tool_context: ToolContextFactory
    max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float
    idle_seconds: float
    on_turn: Callable[[str, float], None] | None = None


class TurnFailed(Exception):
    """A turn cannot be answered; the reason is stored on the inbox rows."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


class ConversationActor(Actor[ConversationKey]):
    """Folds bursts into turns, asks the engine, and sends through the outbox."""

    __slots__ = ("deps",)

    def __init__(self, key: ConversationKey, deps: ConversationDeps,
                 on_exit: Callable[[Actor[ConversationKey]], None]) -> None:
        super().__init__(key, idle_seconds=deps.idle_seconds, on_exit=on_exit)
        self.deps = deps

    async def handle(self, message: Any) -> None:
        """Dispatch one mailbox message."""
        match message:
            case Inbound(inbox_id=inbox_id):
                await self._turn([inbox_id])
            case Flush():
                await self._flush()
            case _:
                log.warning("actor_message_unknown", message=type(message).__name__)

    async def _collect_burst(self, ids: list[int], window: float) -> None:
        """Fold messages already queued, then those arriving within `window` of the previous one."""
        others: list[Any] = []
        for msg in self.peek_all():
            (ids.append(msg.inbox_id) if isinstance(msg, Inbound) else others.append(msg))
        started = time.monotonic()
        while window > 0 and not others and len(ids) < MAX_BURST_MESSAGES:
            remaining = MAX_BURST_SECONDS - (time.monotonic() - started)
            if remaining <= 0:
                break
            msg = await self.receive(min(window, remaining))
            if msg is None:
                break
            if isinstance(msg, Inbound):
                ids.append(msg.inbox_id)
            else:
                others.append(msg)  # e.g. Stop: answer what we have now, handle it after the turn
        self.push_front(others)

    async def _turn(self, ids: list[int]) -> None:
        settings = await self.deps.settings.current()
        await self._collect_burst(ids, settings.burst_window_ms / 1000)
        repos = self.deps.repos
        rows = [r for r in await repos.inbox.get_many(ids) if r.status == "pending"]
        if not rows:
            return
        last = rows[-1]
        conv = await repos.conversations.ensure(
            last.phone_number_id, last.customer_id, wa_id=last.wa_id, user_id=last.user_id,
            profile_name=last.profile_name,
        )
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(session_id=conv.session_id):
            outcome = await self._supervised_turn(conv, rows, settings)
            duration = time.monotonic() - started
            log.info("turn_finished", outcome=outcome, messages=len(rows), seconds=round(duration, 3),
                     customer=mask_phone(conv.wa_id) if conv.wa_id else "bsuid")
            if self.deps.on_turn is not None:
                self.deps.on_turn(outcome, duration)

    async def _supervised_turn(self, conv: Conversation, rows: list[InboxRow], settings: RuntimeSettings) -> str:
        repos = self.deps.repos
        ids = [r.id for r in rows]
        await repos.conversations.touch(conv.id, inbound=True, preview=rows[-1].text or f"[{rows[-1].type}]")
        if not settings.autoreply:
            await repos.inbox.set_status(ids, "ignored", error="auto-reply is off")
            return "autoreply_off"
        now = time.time()
        if conv.is_paused(now):
            await repos.inbox.set_status(ids, "ignored", error="a person is handling this conversation")
            return "paused"
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._answer(conv, rows, settings)
            except asyncio.CancelledError:
                raise  # shutting down: the rows stay pending and are replayed at start-up
            except (TurnFailed, AIError) as exc:
                kind = exc.kind
                reason = str(exc)
                retryable = isinstance(exc, AIError) and exc.retryable
            except GraphError as exc:
                kind, reason, retryable = "graph_error", exc.reason, exc.retryable
            except Exception as exc:
                kind, reason, retryable = f"turn_crashed:{type(exc).__name__}", f"{type(exc).__name__}: {exc}", True
                log.exception("turn_crashed", attempt=attempt)
            await repos.errors.record(kind, reason, session_id=conv.session_id)
            await repos.inbox.record_attempt(ids, reason)
            if not retryable or attempt >= self.deps.max_attempts:
                await self._give_up(conv, rows, reason)
                return "failed"
            delay = min(self.deps.retry_max_seconds, self.deps.retry_base_seconds * 2 ** (attempt - 1))
            await asyncio.sleep(delay * (0.75 + random.random() / 2))
            # Messages that came in while we waited join this turn, in order.
            more = [m.inbox_id for m in self.peek_all() if isinstance(m, Inbound)]
            if more:
                rows = rows + [r for r in await repos.inbox.get_many(more) if r.status == "pending"]
                ids = [r.id for r in rows]

    async def _give_up(self, conv: Conversation, rows: list[InboxRow], reason: str) -> None:
        """Mark the rows failed with the reason and tell the customer a person will follow up."""
        repos = self.deps.repos
        async with repos.db.transaction():
            await repos.outbox.enqueue(
                conv.phone_number_id, conv.customer_id, author="system",
                parts=[fixed_text("fallback", conv.language)], reply_to_inbox_id=rows[-1].id,
            )
            await repos.inbox.set_status([r.id for r in rows], "failed", error=reason)
            await repos.conversations.set_state(conv.id, "failed")
        log.warning("turn_failed", reason=reason)
        await self._flush()

    async def _answer(self, conv: Conversation, rows: list[InboxRow], settings: RuntimeSettings) -> str:
        repos = self.deps.repos
        recipient = Recipient(conv.wa_id, conv.user_id)
        texts = [r.text for r in rows if r.text]
        language = conv.language
        detected = detect_language("\n".join(texts))
        if detected and detected != language:
            language = detected
            await repos.conversations.set_language(conv.id, detected)
        if not texts:
            # Nothing the model can read yet (media support comes with its own handler).
            await self._commit_reply(conv, rows, [fixed_text("unsupported", language)], None, author="system")
            return "unsupported"
        await self._turn_started(conv, rows, settings, recipient)
        try:
            unread = sorted({r.type for r in rows if not r.text})
            context = [f"The customer also sent: {', '.join(unread)} (not readable here)."] if unread else []
            session = Session(
                session_id=conv.session_id,
                previous_response_id=conv.last_response_id,
                previous_response_at=conv.last_response_at,
                language=language,
            )
            redact = make_redactor([conv.wa_id])
            tool_ctx = await self.deps.tool_context(conv, language)
            result: TurnResult = await self.deps.engine.respond(
                session,
                [{"role": "user", "content": "\n".join(texts)}],
                settings=settings.ai,
                redact=redact,
                tool_context=tool_ctx,
                context_lines=context,
            )
            fresh = await repos.conversations.get(conv.phone_number_id, conv.customer_id)
            if fresh is not None and fresh.is_paused(time.time()):
                # A human stepped in while the model was thinking: drop the draft and its response id.
                await repos.inbox.set_status([r.id for r in rows], "ignored", error="a person stepped in")
                log.info("draft_dropped", reason="human_took_over")
                return "dropped"
            reply = result.text or fixed_text("fallback", language)
            await self._commit_reply(conv, rows, split_text(reply), result.response_id, author="ai")
            return "answered"
        finally:
            await self._turn_ended(conv, rows, settings, recipient)

    async def _commit_reply(self, conv: Conversation, rows: list[InboxRow], parts: list[str],
                            response_id: str | None, *, author: str) -> None:
        """Outbox rows, the new chain head and the closed inbox rows, in one transaction; then send."""
        repos = self.deps.repos
        async with repos.db.transaction():
            await repos.outbox.enqueue(conv.phone_number_id, conv.customer_id, author=author, parts=parts,
                                       reply_to_inbox_id=rows[-1].id)
            if response_id is not None:
                await repos.conversations.save_response(conv.id, response_id)
            await repos.inbox.set_status([r.id for r in rows], "done")
            if conv.state != "active":
                await repos.conversations.set_state(conv.id, "active")
        await self._flush()

    async def _turn_started(self, conv: Conversation, rows: list[InboxRow], settings: RuntimeSettings,
                            recipient: Recipient) -> None:
        """Best effort: mark read with typing, and the optional reaction; failures never stop a turn."""
        sender = self.deps.sender
        try:
            await sender.mark_read(conv.phone_number_id, rows[-1].wamid, typing=True)
            if settings.reaction:
                await sender.send_reaction(conv.phone_number_id, recipient, rows[-1].wamid, settings.reaction_emoji)
        except GraphError as exc:
            log.info("turn_signal_failed", error=exc.reason)

    async def _turn_ended(self, conv: Conversation, rows: list[InboxRow], settings: RuntimeSettings,
                          recipient: Recipient) -> None:
        if not settings.reaction:
            return
        try:
            await self.deps.sender.send_reaction(conv.phone_number_id, recipient, rows[-1].wamid, "")
        except GraphError as exc:
            log.info("turn_signal_failed", error=exc.reason)

    async def _flush(self) -> None:
        """Send queued outbox rows in order; transient errors back off, final ones are recorded."""
        repos = self.deps.repos
        phone_number_id, customer_id = self.key
        queued = await repos.outbox.queued(phone_number_id, customer_id)
        if not queued:
            return
        conv = await repos.conversations.get(phone_number_id, customer_id)
        if conv is None:
            return
        for row in queued:
            await self._send_one(conv, row)

    async def _send_one(self, conv: Conversation, row: OutboxRow) -> None:
        repos = self.deps.repos
        recipient = Recipient(conv.wa_id, conv.user_id)
        attempt = row.attempts
        while True:
            attempt += 1
            await repos.outbox.mark_sending(row.id)
            try:
                wamid = await self.deps.sender.send_text(conv.phone_number_id, recipient, row.text)
            except GraphError as exc:
                if not exc.retryable or attempt >= self.deps.max_attempts:
                    await repos.outbox.mark_failed(row.id, exc.code, exc.reason)
                    await repos.errors.record(f"send_failed:{exc.code or 'network'}", exc.reason,
                                              session_id=conv.session_id)
                    log.warning("reply_failed", code=exc.code, reason=exc.reason)
                    return
                await repos.outbox.requeue(row.id, exc.reason)
                delay = min(self.deps.retry_max_seconds, self.deps.retry_base_seconds * 2 ** (attempt - 1))
                if exc.retry_after:
                    delay = max(delay, exc.retry_after)
                log.info("reply_retried", attempt=attempt, delay=round(delay, 2), reason=exc.reason)
                await asyncio.sleep(delay)
                continue
            await repos.outbox.mark_sent(row.id, wamid)
            await repos.conversations.touch(conv.id, inbound=False, preview=row.text)
            log.info("reply_sent", author=row.author, chars=len(row.text))
            return
