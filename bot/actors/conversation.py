"""The conversation actor: THE owner of one conversation, and the only code that sends to its customer.

It loads its conversation once, when it activates, and keeps it while live. Each turn reads nothing
more and ends in one unit of work (inbox rows closed, outbox rows queued, the new response id,
language and state), which the writer commits together with other actors' units. Then it sends.
Operators, the Business app and the order pages reach it with `tell`: they never send themselves.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Protocol, TypeVar

import orjson
import structlog

from bot.actors.admission import Admission, Draining
from bot.actors.base import Actor, IdleClock
from bot.actors.channels import Channels
from bot.actors.costs import Costs
from bot.actors.guards import (
    FLOOD_WINDOW,
    LoopWatch,
    over_limit,
    people_are_in,
    person_answers,
    within_hour_window,
)
from bot.actors.media import TEXT_KINDS, MediaReader, Understood
from bot.actors.reading import Prepared, prepare
from bot.ai.engine import AIError, Engine, TurnResult, Usage
from bot.ai.language import detect_language
from bot.ai.privacy import make_redactor
from bot.backoff import Backoff
from bot.configuration.settings import RuntimeSettings, SettingsSource
from bot.domain.choices import Choice, plain, to_choices
from bot.domain.conversation import (
    Address,
    ConversationKey,
    InboundMessage,
    MessageDetail,
    Order,
    OutboundMessage,
    SendError,
    Session,
    StoredInbound,
    mask_phone,
)
from bot.persistence import Repositories
from bot.persistence import commands as command_sql
from bot.persistence import inbox as inbox_sql
from bot.persistence import outbox as outbox_sql
from bot.persistence.conversations import Arrival, Conversation, ConversationRepo
from bot.persistence.crm import Contact, OrderRejected, conversation_and_contact, refresh_contact_stmt
from bot.persistence.database import Conflict, DatabaseUnavailable, Stmt, marks
from bot.persistence.events import event_stmts
from bot.persistence.usage import usage_stmt
from bot.texts import text as fixed_text
from bot.tools.core import ToolContext, TurnActions
from bot.tools.orders import order_summary
from bot.whatsapp.text import split_text

log = structlog.get_logger("bot.conversation")

# A burst never grows past this, however chatty the customer: the reply must come eventually.
MAX_BURST_SECONDS = 10.0
MAX_BURST_MESSAGES = 30
# One turn takes at most this much of the customer's text; the rest goes to the next turn.
MAX_TURN_CHARS = 8000


@dataclass(frozen=True, slots=True)
class Inbound:
    """A customer message is in the inbox."""

    stored: StoredInbound


@dataclass(frozen=True, slots=True)
class Wake:
    """Look at the durable mailbox: commands, outbox rows others queued, inbox rows not yet seen.

    `human`: a person stepped in (an operator's message or action, an echo from the Business app),
    so a model call in flight is abandoned and its draft dropped.
    """

    human: bool = False


@dataclass(frozen=True, slots=True)
class Reload:
    """The stored conversation changed outside the actor (sessions were reset): read it again."""


def _is_human(message: Any) -> bool:
    return isinstance(message, Wake) and message.human


class ToolContextFactory(Protocol):
    """Builds a turn's ToolContext from the actor's cached state (no database work)."""

    def __call__(self, key: ConversationKey, conv: Conversation, contact: Contact, language: str | None,
                 actions: TurnActions) -> ToolContext:
        """The context of one turn."""
        ...


def _nothing(*_: Any, **__: Any) -> None:
    return None


def _no_detail(_: dict[str, Any]) -> MessageDetail | None:
    return None


@dataclass(frozen=True, slots=True)
class ConversationEvents:
    """What the rest of the server wants to hear about (metrics, the live inbox); all optional."""

    turn_finished: Callable[[str, float], None] = _nothing
    model_used: Callable[[str, Usage, float], None] = _nothing  # model, tokens, cost
    sent: Callable[[ConversationKey, str], None] = _nothing  # key, author
    send_failed: Callable[[int | None], None] = _nothing
    changed: Callable[[ConversationKey, str], None] = _nothing  # key, what
    error: Callable[[str], None] = _nothing


@dataclass(frozen=True, slots=True)
class ConversationDeps:
    """Everything a conversation actor uses, injected by the composition root."""

    repos: Repositories
    engine: Engine
    channels: Channels
    media: MediaReader
    settings: SettingsSource
    admission: Admission
    costs: Costs
    tool_context: ToolContextFactory
    backoff: Backoff
    idle_seconds: float
    events: ConversationEvents = field(default_factory=ConversationEvents)
    # Reads a stored payload's details (edits, orders…) for rows replayed from the inbox.
    detail_of: Callable[[dict[str, Any]], MessageDetail | None] = _no_detail
    # Several processes store this conversation's messages: a turn reads what is pending, so that a
    # message another process stored first is answered first, not after one told to us directly.
    shared: bool = False
    # Every actor's idle time on one timer (a timer each would cost more than the rest of an idle actor).
    idle_clock: IdleClock = field(default_factory=IdleClock)


@dataclass(slots=True)
class _Pending:
    """An outbox row the actor will send (its own, or one an operator queued)."""

    id: int
    message: OutboundMessage
    author: str
    attempts: int = 0
    answers: bool = False  # a reply to the customer's message (its turn began inside the window)


class _Superseded(Exception):
    """The turn's rows were closed meanwhile (another process answered them, or a retried write had
    committed after all): its write was undone, and the conversation is read again."""


@dataclass(slots=True)
class _Unit:
    """One turn's writes, committed together: how its inbox rows close, what it queues, anything else."""

    status: str = "done"
    error: str | None = None
    messages: list[OutboundMessage] = field(default_factory=list)
    author: str = "ai"
    stmts: list[Stmt] = field(default_factory=list)
    changed: str | None = None  # what to tell the live inbox once committed
    closes_rows: bool = False  # some of `stmts` close inbox rows of the turn themselves

    def add(self, *stmts: Stmt) -> None:
        self.stmts.extend(stmts)


class ConversationActor(Actor[ConversationKey]):
    """Folds bursts into turns, asks the engine, and sends through its channel."""

    __slots__ = ("_arrivals", "_joined", "_offered", "_offered_read", "_sending", "_spent", "_watch", "contact", "conv",
                 "deps")

    def __init__(self, key: ConversationKey, deps: ConversationDeps,
                 on_exit: Callable[[Actor[ConversationKey]], None]) -> None:
        super().__init__(key, idle_seconds=deps.idle_seconds, on_exit=on_exit, clock=deps.idle_clock)
        self.deps = deps
        self.conv: Conversation | None = None
        self.contact: Contact | None = None
        self._sending: list[_Pending] | None = None  # what to send now; None after every turn (no list kept idle)
        # The choices we offered last (read back from the outbox once per activation, so a "2" typed after
        # a restart, a pause or a move to another process is still understood); and only while the
        # customer is writing now (lost on passivation, which is fine): recent arrival times (a flood),
        # and what tells a bot from a person.
        self._offered: tuple[Choice, ...] | None = None
        self._offered_read = False
        self._spent: list[Usage] | None = None  # what this turn's calls have cost, not yet in the ledger
        self._arrivals: list[float] | None = None
        self._watch: LoopWatch | None = None
        self._joined: frozenset[int] | None = None  # the rows the last turn took from the store (not told)

    # -- the mailbox ---------------------------------------------------------------------------
    def tell(self, message: Any) -> None:
        """Enqueue a message; a stored text waits for its turn without its raw payload (nothing reads it
        again), as thousands of them may wait during a flood."""
        if isinstance(message, Inbound) and message.stored.message.type in TEXT_KINDS \
                and message.stored.message.payload:
            stored = message.stored
            message = Inbound(replace(stored, message=replace(stored.message, payload={})))
        super().tell(message)

    def handle(self, message: Any) -> Coroutine[Any, Any, None]:
        """Dispatch one mailbox message: the coroutine for the run loop to await.

        Not a coroutine itself, so a turn waiting for admission holds one frame less (in a flood,
        thousands of turns wait).
        """
        match message:
            case Inbound(stored=stored):
                return self._turn([stored])
            case Wake():
                return self._wake()
            case Reload():
                self.conv = self.contact = None
            case _:
                log.warning("actor_message_unknown", message=type(message).__name__)
        return _done()

    async def _state(self) -> tuple[Conversation, Contact]:
        """The cached conversation and contact, read once per activation."""
        if self.conv is None or self.contact is None:
            repos, key = self.deps.repos, self.key
            row, contact = await conversation_and_contact(repos.db, key.business, key.customer)
            conv = None if row is None else Conversation.from_row(row)
            if conv is not None and conv.last_outbound_at is None and not self._offered_read:
                # Nothing was ever sent to this customer, so no choices were offered: no read for them.
                self._offered, self._offered_read = None, True
            if conv is None or contact is None:
                # Not created by the ingest (a replayed row from before it did): create both now.
                conv = await repos.conversations.ensure(key.business, key.customer, wa_id=_digits(key.customer))
                contact = await repos.contacts.ensure(key.business, key.customer, wa_id=conv.wa_id,
                                                      user_id=conv.user_id, profile_name=conv.profile_name)
            self.conv, self.contact = _cached(conv, contact, key)
        return self.conv, self.contact

    async def _write(self, stmts: Sequence[Stmt]) -> list[Any]:
        """A unit of work, retried while the database is unavailable (nothing is lost meanwhile)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.deps.repos.db.write(stmts, keys=((self.key.business, self.key.customer),))
            except DatabaseUnavailable as exc:
                delay = self.deps.backoff.delay(min(attempt, 16))
                log.warning("write_postponed", error=str(exc), attempt=attempt, delay=round(delay, 2))
                await asyncio.sleep(delay)

    # -- durable mailbox: operators, echoes, replays -------------------------------------------
    async def _wake(self, *, pick_up: bool = True) -> None:
        """Apply queued commands, send rows others queued, and (`pick_up`) answer rows not told to us."""
        self.take(lambda m: isinstance(m, Wake))  # one look serves every Wake queued so far
        repos = self.deps.repos
        conv, _ = await self._state()
        commands, queued, pending = await asyncio.gather(
            repos.commands.for_key(self.key), repos.outbox.queued(self.key),
            repos.inbox.pending(self.key) if pick_up else _none(),
        )
        settings = await self.deps.settings.current()
        now = time.time()
        new = conv
        stmts: list[Stmt] = []
        changes: list[str] = []
        for command in commands:
            new, more, what = await self._command(new, command.kind, command.payload, settings,
                                                  min(command.created_at, now))
            stmts += more
            if what:
                changes.append(what)
        known = {p.id for p in self._sending or ()}
        fresh = [r for r in queued if r.id not in known]
        by_operator = [r.created_at for r in fresh if r.author == "operator"]
        if by_operator:
            # An operator's message: a person is at work, so the AI holds (the cooldown after their last
            # message, or until handed back); what was said since their first is context on hand-back.
            new = new.paused_by_human(until=_cooldown_end(settings, max(by_operator)), now=min(by_operator))
            changes.append("operator_message")
        if commands:
            stmts.append(command_sql.consume_stmt([c.id for c in commands]))
        if new is not conv:
            stmts.append(ConversationRepo.save_stmt(new, now))
        if stmts:
            await self._write(stmts)
            self.conv = new
        for what in changes:
            self.deps.events.changed(self.key, what)
        self._queue_sends([_Pending(r.id, r.message, r.author, r.attempts, answers=r.reply_to_inbox_id is not None)
                           for r in fresh])
        await self._flush()
        told = {m.stored.inbox_id for m in self.queued() if isinstance(m, Inbound)}
        untold = [r.stored(self.deps.detail_of) for r in pending if r.id not in told]
        if untold:
            await self._turn(untold)

    async def _command(self, conv: Conversation, kind: str, payload: dict[str, Any], settings: RuntimeSettings,
                       now: float) -> tuple[Conversation, list[Stmt], str | None]:
        """One command's effect on the state, and the statements that go with it."""
        match kind:
            case "pause":
                return conv.paused_by_human(until=None, now=now), [], "paused"
            case "resume":
                log.info("ai_resumed")
                self._arrivals = None  # a flood before the hand-back no longer counts against the customer
                return conv.handed_back(), [], "resumed"
            case "echo":
                # A message from the WhatsApp Business app on the same number: a person is at work.
                repeat = await self.deps.repos.db.fetchval(
                    "SELECT 1 FROM outbox WHERE wamid = $1", str(payload.get("wamid")))
                if repeat is not None:
                    return conv, [], None  # Meta re-delivered an echo we already counted
                stmt = outbox_sql.echo_stmt(self.key, wamid=str(payload["wamid"]), kind=str(payload.get("type")),
                                            text=str(payload.get("text") or ""))
                paused = conv.paused_by_human(until=_cooldown_end(settings, now), now=now)
                return paused.touched(inbound=False, preview=str(payload.get("text") or ""), now=now), [stmt], "echo"
            case _:
                log.warning("command_unknown", kind=kind)
                return conv, [], None

    # -- turns ---------------------------------------------------------------------------------
    def _fold(self, batch: list[StoredInbound]) -> None:
        """Take customer messages already queued into this turn, up to the per-turn limits."""
        seen = {s.inbox_id for s in batch}
        chars = sum(len(s.message.text or "") for s in batch)
        taken: list[Any] = []
        for m in self.queued():
            if not isinstance(m, Inbound):
                continue
            if m.stored.inbox_id in seen or (self._joined is not None and m.stored.inbox_id in self._joined):
                taken.append(m)  # told twice (a replay and a live tell, or joined from the store): answer once
                continue
            size = len(m.stored.message.text or "")
            if batch and (len(batch) >= MAX_BURST_MESSAGES or chars + size > MAX_TURN_CHARS):
                break  # the rest goes to the next turn, in order (a turn always takes its first message)
            batch.append(m.stored)
            seen.add(m.stored.inbox_id)
            chars += size
            taken.append(m)
        if taken:
            ids = {id(m) for m in taken}
            self.take(lambda m: id(m) in ids)

    async def _collect_burst(self, batch: list[StoredInbound], window: float) -> None:
        """Fold messages arriving within `window` of the previous one (bounded in time and count)."""
        started = time.monotonic()
        while window > 0:
            self._fold(batch)
            if self.queued():
                return  # a limit was reached, or e.g. Stop or an operator waits: answer what we have now
            remaining = MAX_BURST_SECONDS - (time.monotonic() - started)
            if remaining <= 0 or not await self.arrival(min(window, remaining)):
                return

    async def _turn(self, first: list[StoredInbound]) -> None:
        settings = await self.deps.settings.current()
        batch: list[StoredInbound] = []
        # A replay may hand over more than one turn takes: the rest waits its turn in the mailbox, in order.
        self.push_front([Inbound(s) for s in first])
        del first  # not kept while the turn waits for a slot
        self._fold(batch)
        if not batch:
            return
        await self._collect_burst(batch, settings.burst_window_ms / 1000)
        try:
            # The turn's own coroutine starts once admitted: in a flood thousands of turns wait here, each
            # holding only this frame.
            async with self.deps.admission.slot(order=batch[0].inbox_id):
                outcome = await self._admitted(batch, settings)
        except Draining:
            return  # shutting down before this turn began: its messages stay pending, nothing is lost
        await self._flush()
        if settings.reaction and outcome == "answered" and not self.key.is_local and self.conv is not None:
            # The reaction said "working on it": take it back now that the reply has gone.
            await self._signal(self.deps.channels.for_key(self.key).react(
                self.key, _address(self.conv), batch[-1].message.wamid, ""))

    async def _admitted(self, batch: list[StoredInbound], settings: RuntimeSettings) -> str:
        """The turn, holding its admission slot; returns its outcome."""
        # Messages that came while we waited for a slot join this turn.
        self._fold(batch)
        if any(_is_human(m) for m in self.queued()):
            await self._wake(pick_up=False)  # a person stepped in before we began: their action comes first
        if self.deps.shared:
            await self._join_stored(batch)
        conv, _ = await self._state()
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(session_id=conv.session_id):
            outcome = await self._supervised(batch, settings)
            duration = time.monotonic() - started
            log.info("turn_finished", outcome=outcome, messages=len(batch), seconds=round(duration, 3),
                     customer=mask_phone(conv.wa_id) if conv.wa_id else "bsuid")
            self.deps.events.turn_finished(outcome, duration)
        return outcome

    def _spend(self) -> list[Usage]:
        if self._spent is None:
            self._spent = []
        return self._spent

    def _spending(self, model: str, now: float) -> list[Stmt]:
        """The ledger row for the model calls made since the last one (none when nothing was spent)."""
        spent, self._spent = self._spent, None
        if not spent:
            return []
        usage = sum(spent[1:], spent[0])
        cost = self.deps.costs.cost(model, usage)
        self.deps.costs.add(cost)
        self.deps.events.model_used(model, usage, cost)
        return [usage_stmt(self.key, model, calls=len(spent), input_tokens=usage.input_tokens,
                           cached_tokens=usage.cached_tokens, output_tokens=usage.output_tokens, cost=cost, now=now)]

    async def _last_offered(self) -> tuple[Choice, ...] | None:
        """The choices of the AI's last message, if that message offered some."""
        row = await self.deps.repos.outbox.last_from_ai(self.key)
        if row is None or row.kind != "choices" or not row.body:
            return None
        try:
            return tuple(to_choices(orjson.loads(row.body)["choices"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    async def _join_stored(self, batch: list[StoredInbound]) -> None:
        """Add the pending messages other processes stored (and only told us of by a Wake), in arrival order.

        All of them, the later ones too: a customer's burst that the load balancer spread over two
        processes is one turn, not one for each process's share. A row taken here may still be told
        to us by our own ingest (it had stored the row but not yet told it): `_joined` drops that tell.
        """
        have = {s.inbox_id for s in batch} | {m.stored.inbox_id for m in self.queued() if isinstance(m, Inbound)}
        found = [r.stored(self.deps.detail_of) for r in await self.deps.repos.inbox.pending(self.key)
                 if r.id not in have]
        self._joined = None
        if not found:
            return
        merged = sorted([*batch, *found], key=lambda s: s.inbox_id)
        chars, keep = 0, 0
        for stored in merged:
            chars += len(stored.message.text or "")
            if keep and (keep >= MAX_BURST_MESSAGES or chars > MAX_TURN_CHARS):
                break
            keep += 1
        batch[:] = merged[:keep]
        self.push_front([Inbound(s) for s in merged[keep:]])  # the next turn, still in order
        self._joined = frozenset(s.inbox_id for s in found) & {s.inbox_id for s in batch} or None

    async def _supervised(self, batch: list[StoredInbound], settings: RuntimeSettings) -> str:
        attempt = 0
        first_try = time.monotonic()
        memo: dict[int, str] = {}  # what a try already did that a retry must not do again (draft orders)
        while True:
            attempt += 1
            try:
                return await self._answer(batch, settings, memo)
            except asyncio.CancelledError:
                raise  # shutting down: the rows stay pending and are replayed at start-up
            except _Superseded:
                return "superseded"
            except AIError as exc:
                kind, reason, retryable = exc.kind, str(exc), exc.retryable
            except SendError as exc:
                kind, reason, retryable = "send_error", exc.reason, exc.retryable
            except Exception as exc:
                kind, reason, retryable = f"turn_crashed:{type(exc).__name__}", f"{type(exc).__name__}: {exc}", True
                log.exception("turn_crashed", attempt=attempt)
            conv, _ = await self._state()
            ids = [s.inbox_id for s in batch]
            # What the failed try's calls cost goes in the ledger (and the budget) all the same.
            await self._write([self.deps.repos.errors.stmt(kind, reason, session_id=conv.session_id),
                               self.deps.repos.inbox.attempt_stmt(ids, reason),
                               *self._spending(settings.ai.model, time.time())])
            if not retryable or self.deps.backoff.exhausted(attempt, first_try):
                await self._give_up(batch, reason)
                return "failed"
            await asyncio.sleep(self.deps.backoff.delay(attempt))
            # Messages that came in while we waited join this turn, in order.
            self._fold(batch)

    async def _give_up(self, batch: list[StoredInbound], reason: str) -> None:
        """Mark the rows failed with the reason and tell the customer a person will follow up."""
        conv, _ = await self._state()
        # The turn may have detected the language before failing: answer in it.
        language = detect_language("\n".join(s.message.text or "" for s in batch)) or conv.language
        conv = replace(conv, language=language)
        unit = _Unit(status="failed", error=reason, author="system", changed="failed",
                     messages=[OutboundMessage("text", fixed_text("fallback", language))])
        log.warning("turn_failed", reason=reason)
        await self._commit(batch, unit, replace(conv, state="failed"))

    async def _answer(self, batch: list[StoredInbound], settings: RuntimeSettings, memo: dict[int, str]) -> str:
        conv, _ = await self._state()
        if not self._offered_read:
            self._offered, self._offered_read = await self._last_offered(), True
        prepared = prepare(batch, self._offered)
        moved_to = next((n.new_wa_id for n in prepared.notices if n.number_changed and n.new_wa_id
                         and n.new_wa_id != conv.wa_id), None)
        outcome = await self._reply(batch, prepared, settings, memo)
        if moved_to is not None:
            await self._move(moved_to)  # after the turn's write, which closed the rows under the old key
        return outcome

    async def _reply(self, batch: list[StoredInbound], prepared: Prepared, settings: RuntimeSettings,
                     memo: dict[int, str]) -> str:
        conv, contact = await self._state()
        now = time.time()
        conv = _refresh_identity(conv, batch)
        unit = _Unit()
        for inbox_id, status, why in prepared.closed:
            unit.add(inbox_sql.close_stmt([inbox_id], status, error=why, now=now))
            unit.closes_rows = True
        if prepared.revoked:
            unit.add(Stmt(f"UPDATE inbox SET revoked_at = $1 WHERE wamid IN ({marks(len(prepared.revoked), 4)}) "
                          f"AND phone_number_id = $2 AND customer_id = $3",
                          (now, self.key.business, self.key.customer, *prepared.revoked)))
            unit.changed = "revoked"
        conv = self._notices(conv, prepared, now, unit)
        # Outside the guards: a customer's catalogue order is a draft order whatever happens next.
        answer = [*prepared.answer, *[await self._order(stored, order, contact, memo) for stored, order in
                                      prepared.orders]]
        answer.sort(key=lambda s: s.inbox_id)
        if not answer:
            unit.status, unit.error = "ignored", "nothing to answer"
            await self._commit(batch, unit, conv)
            return "no_reply"
        if not settings.autoreply:
            unit.status, unit.error = "ignored", "auto-reply is off"
            await self._commit(batch, unit, conv)
            return "autoreply_off"
        if conv.is_paused(now):
            unit.status, unit.error = "ignored", "a person is handling this conversation"
            await self._commit(batch, unit, conv)
            return "paused"
        guarded = await self._guards(answer, conv, settings, now, unit)
        if guarded is not None:
            return guarded
        conv = self.conv or conv
        understood: list[tuple[InboundMessage, Understood]] = []
        for stored in answer:
            got = await self.deps.media.read(stored.message)
            if got.transcript:
                unit.add(inbox_sql.InboxRepo.text_stmt(stored.inbox_id, got.transcript))
            if got.problem:
                unit.add(self.deps.repos.errors.stmt(f"media_failed:{stored.message.type}", got.problem,
                                                     session_id=conv.session_id))
            understood.append((stored.message, got))
        if all(u.no_reply for _, u in understood):
            unit.status, unit.error = "ignored", "nothing to answer (reaction)"
            await self._commit(batch, unit, conv)
            return "no_reply"
        texts = [u.text for _, u in understood if u.text]
        detected = detect_language("\n".join(u.text for m, u in understood if u.text and m.type != "location"))
        if detected and detected != conv.language:
            conv = replace(conv, language=detected)
        language = conv.language
        if not texts:
            # Nothing the model can read (unsupported type, failed download): a fixed, polite reply.
            fixed = next((u.fixed_reply for _, u in understood if u.fixed_reply), "unsupported")
            unit.author, unit.messages = "system", [OutboundMessage("text", fixed_text(fixed, language))]
            await self._commit(batch, unit, conv)
            return fixed
        if _asks_for_human("\n".join(texts), settings.handoff_keywords):
            self._handoff_unit(unit, settings, language, now, "the customer asked for a person")
            await self._commit(batch, unit, _needs_human(conv, now))
            return "handoff"
        if conv.paused:
            conv = replace(conv, paused=False, paused_until=None)  # the cooldown ran out: the AI is back
        signals = asyncio.get_running_loop().create_task(self._typing(conv, answer[-1].message, settings))
        try:
            result = await self._ask_model(conv, contact, answer, understood, settings, language)
        finally:
            await signals
        if result is None:
            unit.status, unit.error = "ignored", "a person stepped in"
            unit.add(*self._spending(settings.ai.model, now))  # the calls made before it was cancelled
            await self._commit(batch, unit, self.conv or conv)
            log.info("draft_dropped", reason="human_took_over")
            return "dropped"
        reply, actions = result
        unit.add(*self._spending(reply.model, now))
        if actions.contact_changed:
            self.contact = None  # a tool changed it: read it again next turn
        conv = replace(conv, last_response_id=reply.response_id, last_response_at=now, state="active",
                       paused_since=None, rate_window_turns=conv.rate_window_turns + 1)
        if actions.handoff_reason is not None:
            # A tool handed off: the model's draft is dropped, the customer hears the hand-off text.
            self._handoff_unit(unit, settings, language, now, actions.handoff_reason)
            await self._commit(batch, unit, _needs_human(conv, now))
            return "handoff"
        offered: tuple[Choice, ...] | None = None
        if actions.choices is not None:
            offered = tuple(to_choices(actions.choices["choices"]))
            question = str(actions.choices["text"])
            unit.messages = [OutboundMessage("choices", plain(question, offered), {
                "text": question, "choices": actions.choices["choices"], "language": language})]
        else:
            unit.messages = [OutboundMessage("text", part)
                             for part in split_text(reply.text or fixed_text("fallback", language))]
        await self._commit(batch, unit, conv)
        self._offered = offered  # a typed answer to these is understood in the next turn
        return "answered"

    async def _guards(self, answer: list[StoredInbound], conv: Conversation, settings: RuntimeSettings, now: float,
                      unit: _Unit) -> str | None:
        """Opening hours, the monthly budget, the customer's limits, another bot: an outcome, or None to go on."""
        self._arrivals = [t for t in (self._arrivals or ()) if now - t < FLOOD_WINDOW] + \
            [s.received_at for s in answer]
        # What is still waiting counts too: a flood shows in the mailbox long before it shows in turns.
        waiting = sum(1 for m in self.queued() if isinstance(m, Inbound) and now - m.stored.received_at < FLOOD_WINDOW)
        watch = self._watch or LoopWatch()
        for stored in answer:
            watch = watch.heard(stored.message.text, stored.received_at, settings.loop_reply_seconds)
        self._watch = watch
        conv = within_hour_window(conv, now)
        language = conv.language
        if people_are_in(settings, now):
            # The AI answers only outside opening hours: the team has it now.
            unit.status, unit.error, unit.changed = "ignored", "opening hours: the team answers", "needs_human"
            await self._commit(answer, unit, replace(conv, needs_human=True))
            return "opening_hours"
        if watch.looping:
            unit.status, unit.error, unit.changed = "ignored", "another automated sender: the AI paused", "loop"
            log.warning("loop_detected", fast_replies=watch.fast_replies, same_text=watch.same_text)
            await self._commit(answer, unit, conv.paused_by_human(until=None, now=now).flagged("loop", now))
            return "loop"
        if self.deps.costs.over(settings.monthly_budget):
            unit.status, unit.error = "ignored", "the monthly budget is reached"
            if conv.flag != "budget":  # the customer hears once that a person will answer
                self._handoff_unit(unit, settings, language, now, "the monthly budget is reached")
            await self._commit(answer, unit, _needs_human(conv, now).flagged("budget", now))
            return "budget"
        if over_limit(conv, len(self._arrivals) + waiting, settings):
            unit.status, unit.error = "ignored", f"rate limit: {settings.customer_turns_per_hour} turns an hour"
            if conv.flag != "rate_limited":  # one polite notice, then silence until the hour is over
                unit.author = "system"
                unit.messages = [OutboundMessage("text", person_answers(settings, language, now, "rate_limited"))]
                unit.changed = "rate_limited"
                log.warning("customer_rate_limited", turns=conv.rate_window_turns, recent=len(self._arrivals) + waiting)
            await self._commit(answer, unit, conv.flagged("rate_limited", now))
            return "rate_limited"
        self.conv = conv
        return None

    @staticmethod
    def _notices(conv: Conversation, prepared: Prepared, now: float, unit: _Unit) -> Conversation:
        """WhatsApp's notices about the customer: recorded, never answered (a new number moves it after the turn)."""
        for notice in prepared.notices:
            if notice.number_changed:
                unit.changed = "number_changed"
            elif notice.identity_changed:
                conv = conv.flagged("identity_changed", now)
                unit.changed = "identity_changed"
        return conv

    async def _move(self, new_wa_id: str) -> None:
        """The customer has a new number: the conversation, its history, contact and session go with them."""
        conv, _ = await self._state()
        repos, key = self.deps.repos, self.key
        async with repos.db.transaction() as tx:
            taken = await tx.fetchval("SELECT 1 FROM conversations WHERE phone_number_id = $1 AND customer_id = $2",
                                      key.business, new_wa_id)
            if taken is not None:
                log.warning("number_change_not_applied", reason="a conversation with the new number exists")
                return
            if conv.customer_id == conv.wa_id:  # keyed by phone: the key moves too
                await ConversationRepo.move_in(tx, key.business, old=key.customer, new=new_wa_id, wa_id=new_wa_id)
            else:  # keyed by the business-scoped id: only the number changes
                await tx.execute("UPDATE conversations SET wa_id = $1 WHERE phone_number_id = $2 AND customer_id = $3",
                                 new_wa_id, key.business, key.customer)
            await tx.execute("UPDATE contacts SET wa_id = $1 WHERE phone_number_id = $2 AND customer_id IN ($3, $4)",
                             new_wa_id, key.business, key.customer, new_wa_id)
        log.info("number_changed")
        self.conv = self.contact = None  # this actor's key is the old number's: read afresh if told again

    async def _order(self, stored: StoredInbound, order: Order, contact: Contact,
                     memo: dict[int, str]) -> StoredInbound:
        """A catalogue order becomes a draft order (as create_order makes), and the model reads its summary."""
        if stored.inbox_id not in memo:  # a retried turn does not draft the same cart twice
            note = f" They wrote: {order.text}" if order.text else ""
            try:
                draft = await self.deps.repos.orders.create_draft(contact.id, order.lines(), notes=order.text)
            except OrderRejected as exc:
                memo[stored.inbox_id] = ("[The customer sent an order from the WhatsApp catalogue, but it could not "
                                         f"be made: {'; '.join(exc.problems)}. Explain this kindly.{note}]")
            else:
                summary = orjson.dumps(order_summary(draft, contact.language)).decode()
                memo[stored.inbox_id] = (
                    f"[The customer sent an order from the WhatsApp catalogue. A draft order was made: {summary}. "
                    f"Tell them the lines and the total, then call generate_order_confirmation_form with "
                    f"order_id {draft.id} and send them the link.{note}]")
        return replace(stored, message=replace(stored.message, text=memo[stored.inbox_id], type="text"))

    def _handoff_unit(self, unit: _Unit, settings: RuntimeSettings, language: str | None, now: float,
                      reason: str) -> None:
        unit.author = "system"
        unit.messages = [OutboundMessage("text", person_answers(settings, language, now, "handoff"))]
        unit.changed = "needs_human"
        if not self.key.is_local:
            unit.add(*event_stmts("handoff.requested", {
                "phone_number_id": self.key.business, "customer_id": self.key.customer,
                "wa_id": self.conv.wa_id if self.conv is not None else None, "reason": reason}))
        log.info("handoff_requested")

    async def _ask_model(self, conv: Conversation, contact: Contact, batch: list[StoredInbound],
                         understood: list[tuple[InboundMessage, Understood]], settings: RuntimeSettings,
                         language: str | None) -> tuple[TurnResult, TurnActions] | None:
        """The model's answer, or None when a person stepped in while it was thinking."""
        context = await self._pause_context(conv, batch)
        if any(u.fixed_reply for _, u in understood):
            context.append("Some of the customer's messages could not be read (unsupported or failed "
                           "media): ask them kindly to write it in words if it matters.")
        session = Session(session_id=conv.session_id, previous_response_id=conv.last_response_id,
                          previous_response_at=conv.last_response_at, language=language)
        actions = TurnActions()
        tool_ctx = self.deps.tool_context(self.key, conv, contact, language, actions)
        call = asyncio.get_running_loop().create_task(self.deps.engine.respond(
            session, [_user_item(understood)], settings=settings.ai, redact=make_redactor([conv.wa_id]),
            tool_context=tool_ctx, context_lines=context, spent=self._spend().append,
        ))
        if not await self.until_done_or(call, _is_human):
            return None
        return call.result(), actions

    async def _pause_context(self, conv: Conversation, current: list[StoredInbound]) -> list[str]:
        """What customer and operator said while a person held the conversation (for the model)."""
        if conv.paused_since is None:
            return []
        repos = self.deps.repos
        current_ids = {s.inbox_id for s in current}
        said: list[tuple[float, str]] = []
        for row in await repos.inbox.since(self.key, conv.paused_since):
            if row.id not in current_ids and row.text:
                said.append((row.received_at, f"Customer: {row.text}"))
        for out in await repos.outbox.for_conversation(self.key, conv.paused_since):
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

    async def _commit(self, batch: list[StoredInbound], unit: _Unit, new: Conversation) -> None:
        """The turn's one write: queued replies, closed inbox rows, the new state (and contact language)."""
        _, contact = await self._state()
        ids = [s.inbox_id for s in batch]
        now = time.time()
        new = _refresh_identity(new, batch)
        # The fence: every row of the turn is still pending, or nothing of it is written. Within a
        # process the actor is the only one to close them; across processes it is the lock's holder,
        # and this keeps a process that lost its lock (but not yet its turn) from answering twice.
        # When the unit closes no row on its own, the closing statement is the fence (one statement less).
        if unit.closes_rows:
            stmts = [*([inbox_sql.fence_stmt(ids)] if ids else []), *unit.stmts,
                     inbox_sql.close_stmt(ids, unit.status, error=unit.error, now=now)]
        else:
            stmts = [*unit.stmts, inbox_sql.close_stmt(ids, unit.status, error=unit.error, now=now, fence=bool(ids))]
        first = len(stmts)
        stmts += outbox_sql.enqueue_stmts(self.key, unit.messages, author=unit.author,
                                          reply_to_inbox_id=ids[-1] if ids else None, now=now)
        stmts.append(ConversationRepo.save_stmt(new, now))
        refreshed = _refresh_contact(contact, batch, new.language)
        if refreshed is not contact:
            stmts.append(refresh_contact_stmt(contact.id, wa_id=refreshed.wa_id, user_id=refreshed.user_id,
                                              name=refreshed.name, language=refreshed.language, now=now))
        # The model has answered: a storage failure now retries the write, never the question.
        try:
            results = await self._write(stmts)
        except Conflict as exc:
            log.warning("turn_superseded", reason=str(exc), messages=len(ids))
            self.conv = self.contact = None
            # A write that committed before its connection failed has queued our replies: a Wake sends
            # them (and picks up whatever is still pending).
            self.push_front([Wake()])
            raise _Superseded from exc
        self.conv = new
        if self.contact is not None and refreshed is not contact:
            self.contact = refreshed
        # A row that already existed (a retried turn whose reply was committed before it failed) is not
        # queued again: its id is not returned, so nothing is sent twice.
        returned = results[first : first + len(unit.messages)]
        self._queue_sends([_Pending(int(rows[0][0]), message, unit.author, answers=bool(ids))
                           for rows, message in zip(returned, unit.messages, strict=True) if rows])
        if unit.changed:
            self.deps.events.changed(self.key, unit.changed)

    async def _typing(self, conv: Conversation, last: InboundMessage, settings: RuntimeSettings) -> None:
        """Best effort: mark read with typing, and the optional reaction; failures never stop a turn."""
        if self.key.is_local:
            return
        channel, to = self.deps.channels.for_key(self.key), _address(conv)
        await self._signal(channel.typing(self.key, to, last.wamid))
        if settings.reaction:
            await self._signal(channel.react(self.key, to, last.wamid, settings.reaction_emoji))

    @staticmethod
    async def _signal(call: Any) -> None:
        try:
            await call
        except SendError as exc:
            log.info("turn_signal_failed", error=exc.reason)

    # -- sending -------------------------------------------------------------------------------
    def _queue_sends(self, rows: list[_Pending]) -> None:
        if rows:
            self._sending = [*(self._sending or ()), *rows]

    async def _flush(self) -> None:
        """Send every row this actor has queued, oldest first."""
        while self._sending:
            row = self._sending[0]
            await self._send(row)
            self._sending.pop(0)
        self._sending = None

    async def _send(self, row: _Pending) -> None:
        """queued → sending → sent (or failed), each step a compare-and-set; retried with backoff."""
        conv, _ = await self._state()
        channel, to = self.deps.channels.for_key(self.key), _address(conv)
        if row.message.kind in FREE_FORM and not row.answers and not self.key.is_local \
                and not _in_window(conv, time.time()):
            # WhatsApp refuses free-form messages 24 h after the customer's last one (131047): send the
            # template set for that purpose, or fail with the reason here rather than at Meta.
            message = _out_of_window(row.message, (await self.deps.settings.current()).window_template)
            if message is None:
                await self._write([outbox_sql.failed_stmt(row.id, None, OUT_OF_WINDOW, was="queued")])
                log.warning("reply_failed", reason="outside the 24-hour window", author=row.author)
                self.deps.events.changed(self.key, "send_failed")
                return
            row = _Pending(row.id, message, row.author, row.attempts, row.answers)
        attempt = row.attempts
        first_try = time.monotonic()
        while True:
            attempt += 1
            await channel.pace(self.key)  # waiting for the send rate is not "sending": a crash here resends
            try:
                await self._write([outbox_sql.sending_stmt(row.id)])
            except Conflict:
                log.warning("send_skipped", reason="the row is no longer queued", row=row.id)
                return
            try:
                wamid = await channel.send(self.key, to, row.message)
            except SendError as exc:
                if not exc.retryable or self.deps.backoff.exhausted(attempt, first_try):
                    await self._write([outbox_sql.failed_stmt(row.id, exc.code, exc.reason),
                                       self.deps.repos.errors.stmt(f"send_failed:{exc.code or 'network'}",
                                                                   exc.reason, session_id=conv.session_id)])
                    log.warning("reply_failed", code=exc.code, reason=exc.reason, author=row.author)
                    self.deps.events.send_failed(exc.code)
                    self.deps.events.changed(self.key, "send_failed")
                    return
                # The channel answered (or the network failed) without accepting it: safe to try again.
                await self._write([outbox_sql.requeue_stmt(row.id, exc.reason)])
                delay = self.deps.backoff.delay(attempt, exc.retry_after)
                log.info("reply_retried", attempt=attempt, delay=round(delay, 2), reason=exc.reason)
                await asyncio.sleep(delay)
                continue
            now = time.time()
            sent = (self.conv or conv).touched(inbound=False, preview=row.message.text, now=now)
            # Meta has the message: keep trying to record it, or it would stay 'sending' and its receipts
            # orphaned (after a crash here it becomes 'unknown': never resent).
            stmts = [*outbox_sql.sent_stmts(row.id, wamid), ConversationRepo.activity_stmt(sent, now)]
            if not self.key.is_local:
                stmts += event_stmts("reply.sent", {
                    "phone_number_id": self.key.business, "customer_id": self.key.customer, "wa_id": conv.wa_id,
                    "author": row.author, "kind": row.message.kind, "text": row.message.text, "wamid": wamid,
                }, now=now)
            await self._write(stmts)
            self.conv = sent
            self._watch = (self._watch or LoopWatch()).sent(now)
            log.info("reply_sent", author=row.author, chars=len(row.message.text))
            self.deps.events.sent(self.key, row.author)
            return


async def _none() -> list[Any]:
    return []


async def _done() -> None:
    return None


FREE_FORM = ("text", "choices", "interactive")
WINDOW_SECONDS = 24 * 3600
OUT_OF_WINDOW = ("not sent: the customer's last message is more than 24 hours old, and WhatsApp then allows "
                 "only approved templates; set a template for the server's own texts (BOT_WINDOW_TEMPLATE, or "
                 "the settings page), or send one from the inbox")


def _in_window(conv: Conversation, now: float) -> bool:
    return conv.last_inbound_at is not None and now - conv.last_inbound_at <= WINDOW_SECONDS


def _out_of_window(message: OutboundMessage, template: tuple[str, str] | None) -> OutboundMessage | None:
    """A free-form text carried by the configured template (its one body parameter), or None without one."""
    if template is None:
        return None
    # Template parameters may hold no newlines or tabs and at most four spaces in a row (Meta's rule).
    value = " ".join(message.text.split())[:1000]
    name, language = template
    body = {"name": name, "language": {"code": language},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": value}]}]}
    return OutboundMessage("template", message.text, body)


def _cooldown_end(settings: RuntimeSettings, now: float) -> float | None:
    cooldown = settings.human_cooldown_seconds
    return now + cooldown if cooldown > 0 else None


def _needs_human(conv: Conversation, now: float) -> Conversation:
    return conv.paused_by_human(until=None, now=now, needs_human=True)


def _address(conv: Conversation) -> Address:
    return Address(conv.wa_id, conv.user_id)


def _digits(customer: str) -> str | None:
    return customer if customer.isdigit() else None


def _cached(conv: Conversation, contact: Contact, key: ConversationKey) -> tuple[Conversation, Contact]:
    """The rows as a live actor keeps them: the strings every conversation repeats shared, not a copy each.

    The business number and the customer's ids become the key's own strings, equal names one string,
    and states, languages and the name's source are interned: most of what a cached row weighs.
    """
    conv = replace(conv, phone_number_id=_same(conv.phone_number_id, key.business),
                   customer_id=_same(conv.customer_id, key.customer), wa_id=_same(conv.wa_id, key.customer),
                   state=sys.intern(conv.state), language=_interned(conv.language))
    contact = replace(contact, phone_number_id=_same(contact.phone_number_id, key.business),
                      customer_id=_same(contact.customer_id, key.customer), wa_id=_same(contact.wa_id, conv.wa_id),
                      name=_same(contact.name, conv.profile_name), name_source=sys.intern(contact.name_source),
                      language=_interned(contact.language))
    return conv, contact


_Text = TypeVar("_Text", str, str | None)


def _same(value: _Text, shared: _Text) -> _Text:
    """`shared` when it equals `value`: one string object kept instead of two."""
    return shared if value is not None and value == shared else value


def _interned(value: str | None) -> str | None:
    return sys.intern(value) if value is not None else None


def _refresh_identity(conv: Conversation, batch: list[StoredInbound]) -> Conversation:
    """What the batch's messages tell: number, profile name, last inbound time, activity and preview.

    The turn writes them with its state (`save_stmt`, forward only): the ingest writes them only for
    the conversations its own process runs, so a message another process stored is shown by this write.
    """
    if not batch:
        return conv
    last = batch[-1].message
    # The latest message by the customer's own time (the later one on a tie, as the ingest does).
    heard = max(reversed([Arrival.of(s.message, s.received_at) for s in batch]), key=lambda a: a.at)
    activity = conv.last_activity_at or 0
    if (last.wa_id or conv.wa_id) == conv.wa_id and (last.profile_name or conv.profile_name) == conv.profile_name \
            and (last.user_id or conv.user_id) == conv.user_id and (conv.last_inbound_at or 0) >= heard.at \
            and activity >= heard.at:
        return conv
    return replace(conv, wa_id=last.wa_id or conv.wa_id, user_id=last.user_id or conv.user_id,
                   profile_name=last.profile_name or conv.profile_name,
                   last_inbound_at=max(heard.at, conv.last_inbound_at or 0), last_activity_at=max(heard.at, activity),
                   last_message_preview=heard.preview if heard.at >= activity else conv.last_message_preview)


def _refresh_contact(contact: Contact, batch: list[StoredInbound], language: str | None) -> Contact:
    """The contact with the turn's language and the batch's number and profile name (itself when unchanged)."""
    last = batch[-1].message if batch else None
    wa_id = (last.wa_id if last else None) or contact.wa_id
    user_id = (last.user_id if last else None) or contact.user_id
    name = contact.name
    if contact.name_source == "whatsapp" and last is not None:
        name = (last.profile_name or "").strip() or contact.name
    language = language or contact.language
    if (wa_id, user_id, name, language) == (contact.wa_id, contact.user_id, contact.name, contact.language):
        return contact
    return replace(contact, wa_id=wa_id, user_id=user_id, name=name, language=language)


def _asks_for_human(text: str, keywords: tuple[str, ...]) -> bool:
    pattern = _handoff_pattern(keywords)
    return pattern is not None and pattern.search(f" {text.lower()} ") is not None


@lru_cache(maxsize=8)
def _handoff_pattern(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    """A keyword as a whole word or phrase (after a space, before a space or ?!.,): one regex, not a scan a keyword."""
    words = [re.escape(k.lower()) for k in keywords if k.strip()]
    return re.compile(f" (?:{'|'.join(words)})(?=[ ?!.,])") if words else None


def _user_item(understood: list[tuple[InboundMessage, Understood]]) -> dict[str, Any]:
    """One user message for the model: the texts in order (at most MAX_TURN_CHARS), with any photos as images."""
    texts = [u.text for _, u in understood if u.text]
    joined = "\n".join(texts)
    if len(joined) > MAX_TURN_CHARS:  # one message longer than a turn takes (WhatsApp's own limit is 4,096)
        texts = [joined[:MAX_TURN_CHARS] + " […]"]
    images = [u.image_data_url for _, u in understood if u.image_data_url]
    if not images:
        return {"role": "user", "content": "\n".join(texts)}
    content: list[dict[str, Any]] = [{"type": "input_text", "text": "\n".join(texts)}]
    content.extend({"type": "input_image", "image_url": url, "detail": "auto"} for url in images)
    return {"role": "user", "content": content}
