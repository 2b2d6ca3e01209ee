"""The conversation actor: one customer's turns, one at a time, from inbox rows to a sent reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from bot.actors.base import Actor
from bot.actors.media import MediaReader, Understood
from bot.actors.outbound import Outbound
from bot.actors.takeover import Takeover
from bot.ai.engine import AIError, Engine, Session, TurnResult
from bot.ai.language import detect_language
from bot.ai.privacy import make_redactor, mask_phone
from bot.backoff import Backoff
from bot.persistence import Repositories
from bot.persistence.conversations import Conversation
from bot.persistence.db import DatabaseUnavailable
from bot.persistence.inbox import InboxRow
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


ToolContextFactory = Callable[[Conversation, str | None], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ConversationDeps:
    """Everything a conversation actor uses, injected by the composition root."""

    repos: Repositories
    engine: Engine
    outbound: Outbound
    media: MediaReader
    takeover: Takeover
    settings: SettingsSource
    tool_context: ToolContextFactory
    backoff: Backoff
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
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._turn_rows(ids, settings, retry=attempt > 1)
                return
            except DatabaseUnavailable as exc:
                # Storage failed outside the supervised part, or while recording a failure. The rows are
                # still in the inbox: try again later rather than leave them pending until a restart.
                delay = self.deps.backoff.delay(min(attempt, 16))
                log.warning("turn_postponed", error=str(exc), attempt=attempt, delay=round(delay, 2))
                await asyncio.sleep(delay)

    async def _turn_rows(self, ids: list[int], settings: RuntimeSettings, *, retry: bool) -> None:
        repos = self.deps.repos
        rows = [r for r in await repos.inbox.get_many(ids) if r.status == "pending"]
        if not rows:
            if retry:
                await self._flush()  # a reply committed before the failure may still be queued
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
        # Every customer gets a CRM contact on their first message, even when the AI will not answer.
        tool_ctx = await self.deps.tool_context(conv, conv.language)
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
                return await self._answer(conv, rows, settings, tool_ctx)
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
            if not retryable or self.deps.backoff.exhausted(attempt):
                await self._give_up(conv, rows, reason)
                return "failed"
            await asyncio.sleep(self.deps.backoff.delay(attempt))
            # Messages that came in while we waited join this turn, in order; anything else waits its turn.
            queued = self.peek_all()
            self.push_front([m for m in queued if not isinstance(m, Inbound)])
            more = [m.inbox_id for m in queued if isinstance(m, Inbound)]
            # The failed try may have committed its reply before failing (e.g. while recording the send):
            # go on with what is still pending only, or those messages would be answered twice.
            rows = [r for r in await repos.inbox.get_many(ids + more) if r.status == "pending"]
            if not rows:
                await self._flush()
                return "answered"
            ids = [r.id for r in rows]

    async def _give_up(self, conv: Conversation, rows: list[InboxRow], reason: str) -> None:
        """Mark the rows failed with the reason and tell the customer a person will follow up."""
        repos = self.deps.repos
        # The turn may have detected the language before failing: answer in it.
        fresh = await repos.conversations.get(conv.phone_number_id, conv.customer_id) or conv
        async with repos.db.transaction():
            await repos.outbox.enqueue(
                conv.phone_number_id, conv.customer_id, author="system",
                parts=[fixed_text("fallback", fresh.language)], reply_to_inbox_id=rows[-1].id,
            )
            await repos.inbox.set_status([r.id for r in rows], "failed", error=reason)
            await repos.conversations.set_state(conv.id, "failed")
        log.warning("turn_failed", reason=reason)
        await self._flush()

    async def _pause_context(self, conv: Conversation, current: list[InboxRow]) -> list[str]:
        """What customer and operator said while a person held the conversation (for the model)."""
        if conv.paused_since is None:
            return []
        repos = self.deps.repos
        current_ids = {r.id for r in current}
        said: list[tuple[float, str]] = []
        for row in await repos.inbox.since(conv.phone_number_id, conv.customer_id, conv.paused_since):
            if row.id not in current_ids and row.text:
                said.append((row.received_at, f"Customer: {row.text}"))
        for out in await repos.outbox.for_conversation(conv.phone_number_id, conv.customer_id, conv.paused_since):
            if out["author"] == "operator":
                said.append((out["created_at"], f"Our colleague: {out['text']}"))
        if not said:
            return []
        said.sort(key=lambda item: item[0])
        lines = "\n".join(line for _, line in said[-30:])
        return [
            "A colleague of ours handled this chat for a while and has handed it back to you. "
            "This is what was said meanwhile (do not repeat it, continue from there):\n" + lines
        ]

    def _asks_for_human(self, text: str, keywords: tuple[str, ...]) -> bool:
        lowered = f" {text.lower()} "
        return any(f" {k.lower()} " in lowered or f" {k.lower()}?" in lowered or f" {k.lower()}!" in lowered
                   or f" {k.lower()}." in lowered or f" {k.lower()}," in lowered for k in keywords if k.strip())

    async def _answer(self, conv: Conversation, rows: list[InboxRow], settings: RuntimeSettings,
                      tool_ctx: Any) -> str:
        repos = self.deps.repos
        recipient = Recipient(conv.wa_id, conv.user_id)
        understood: list[tuple[InboxRow, Understood]] = []
        for row in rows:
            got = await self.deps.media.read(row)
            if got.transcript:
                await repos.inbox.set_text(row.id, got.transcript)
            if got.problem:
                await repos.errors.record(f"media_failed:{row.type}", got.problem, session_id=conv.session_id)
            understood.append((row, got))
        if all(u.no_reply for _, u in understood):
            await repos.inbox.set_status([r.id for r in rows], "ignored", error="nothing to answer (reaction)")
            return "no_reply"
        texts = [u.text for _, u in understood if u.text]
        language = conv.language
        detected = detect_language("\n".join(u.text for r, u in understood if u.text and r.type != "location"))
        if detected and detected != language:
            language = detected
            await repos.conversations.set_language(conv.id, detected)
        if not texts:
            # Nothing the model can read (unsupported type, failed download): a fixed, polite reply.
            key = next((u.fixed_reply for _, u in understood if u.fixed_reply), "unsupported")
            await self._commit_reply(conv, rows, [fixed_text(key, language)], None, author="system")
            return key
        if self._asks_for_human("\n".join(texts), settings.handoff_keywords):
            await self.deps.takeover.hand_off(conv)
            await self._commit_reply(conv, rows, [fixed_text("handoff", language)], None, author="system")
            return "handoff"
        if conv.paused:
            # The cooldown ran out: the AI is back; say so in the database too.
            await repos.conversations.resume(conv.id)
        await self._turn_started(conv, rows, settings, recipient)
        try:
            context = await self._pause_context(conv, rows)
            problems = [u.fixed_reply for _, u in understood if u.fixed_reply]
            if problems:
                context.append("Some of the customer's messages could not be read (unsupported or failed "
                               "media): ask them kindly to write it in words if it matters.")
            session = Session(
                session_id=conv.session_id,
                previous_response_id=conv.last_response_id,
                previous_response_at=conv.last_response_at,
                language=language,
            )
            redact = make_redactor([conv.wa_id])
            if language != conv.language:
                # The context (and the contact) must carry the language just detected.
                tool_ctx = await self.deps.tool_context(conv, language)
            result: TurnResult = await self.deps.engine.respond(
                session,
                [_user_item(understood)],
                settings=settings.ai,
                redact=redact,
                tool_context=tool_ctx,
                context_lines=context,
            )
            fresh = await repos.conversations.get(conv.phone_number_id, conv.customer_id)
            if fresh is not None and fresh.is_paused(time.time()):
                # A human stepped in while the model was thinking (or a tool handed off): drop the
                # draft and its response id; send only what the server itself queued (e.g. hand-off).
                await repos.inbox.set_status([r.id for r in rows], "ignored", error="a person stepped in")
                log.info("draft_dropped", reason="human_took_over")
                await self.deps.outbound.flush(conv.phone_number_id, conv.customer_id)
                return "dropped"
            reply = result.text or fixed_text("fallback", language)
            await self._commit_reply(conv, rows, split_text(reply), result.response_id, author="ai")
            if conv.paused_since is not None:
                await repos.conversations.clear_pause_marker(conv.id)
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
        await self.deps.outbound.flush(conv.phone_number_id, conv.customer_id)

    async def _turn_started(self, conv: Conversation, rows: list[InboxRow], settings: RuntimeSettings,
                            recipient: Recipient) -> None:
        """Best effort: mark read with typing, and the optional reaction; failures never stop a turn."""
        if conv.is_test:
            return
        sender = self.deps.outbound.sender
        try:
            await sender.mark_read(conv.phone_number_id, rows[-1].wamid, typing=True)
            if settings.reaction:
                await sender.send_reaction(conv.phone_number_id, recipient, rows[-1].wamid, settings.reaction_emoji)
        except GraphError as exc:
            log.info("turn_signal_failed", error=exc.reason)

    async def _turn_ended(self, conv: Conversation, rows: list[InboxRow], settings: RuntimeSettings,
                          recipient: Recipient) -> None:
        if not settings.reaction or conv.is_test:
            return
        try:
            await self.deps.outbound.sender.send_reaction(conv.phone_number_id, recipient, rows[-1].wamid, "")
        except GraphError as exc:
            log.info("turn_signal_failed", error=exc.reason)

    async def _flush(self) -> None:
        await self.deps.outbound.flush(*self.key)


def _user_item(understood: list[tuple[InboxRow, Understood]]) -> dict[str, Any]:
    """One user message for the model: the texts in order, with any photos as image inputs."""
    texts = [u.text for _, u in understood if u.text]
    images = [u.image_data_url for _, u in understood if u.image_data_url]
    if not images:
        return {"role": "user", "content": "\n".join(texts)}
    content: list[dict[str, Any]] = [{"type": "input_text", "text": "\n".join(texts)}]
    content.extend({"type": "input_image", "image_url": url, "detail": "auto"} for url in images)
    return {"role": "user", "content": content}
