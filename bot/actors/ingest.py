"""From a parsed webhook batch to durable rows and actor messages (no AI work awaited here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from bot.actors.conversation import Inbound, Wake
from bot.domain.conversation import ConversationKey, StoredInbound
from bot.observability.metrics import Metrics
from bot.persistence import commands as command_sql
from bot.persistence import conversations as conversation_sql
from bot.persistence import inbox as inbox_sql
from bot.persistence import outbox as outbox_sql
from bot.persistence.conversations import PREVIEWS, TEST_NUMBER_ID, Arrival
from bot.persistence.crm import arrival_contact_stmts
from bot.persistence.database import Database, DatabaseUnavailable, Stmt
from bot.persistence.events import received_stmts
from bot.persistence.templates import TemplateRepo
from bot.whatsapp.events import BusinessEcho, InboundMessage, WebhookBatch
from bot.whatsapp.templates import apply_status_update

log = structlog.get_logger("bot.ingest")

Tell = Callable[[ConversationKey, Any], None]


# POSTs stored in one unit at most: their statements stay well under both backends' parameter limits.
MAX_POSTS_PER_UNIT = 256


@dataclass(slots=True)
class _Post:
    """One POST waiting for the ingest's next unit, and the inbox rows it turned out to add."""

    batch: WebhookBatch
    future: asyncio.Future[list[StoredInbound]]


class Ingest:
    """Persist first, then tell: a message is acknowledged to Meta only once it is in the inbox.

    The POSTs that arrive while the previous ones are being stored are stored together, as ONE unit
    of work with one multi-row statement per table (not five statements per POST): the unit is marked
    urgent, so it commits in the writer's next group, before any turn's unit. If that unit fails, each
    of its POSTs is stored again as a unit of its own, so a POST that cannot be stored gets its own
    error without failing the others.
    """

    def __init__(self, *, db: Database, tell: Tell, metrics: Metrics | None = None,
                 notify: Callable[..., None] | None = None, acked: Callable[[float], None] | None = None,
                 owns: Callable[[ConversationKey], bool] | None = None) -> None:
        self._db = db
        # Whether this process runs a conversation (always, with one process). Only those rows are
        # brought up to date and locked here: another process's are its actor's to write.
        self._owns = owns
        self._tell = tell
        self._metrics = metrics
        self._notify = notify
        self._acked = acked  # how long storing took, for the turns' admission (ingest comes first)
        self._templates = TemplateRepo(db)
        self._waiting: list[_Post] = []
        self._storing: asyncio.Task[None] | None = None
        self.duplicates_seen = 0

    async def accept(self, batch: WebhookBatch) -> list[StoredInbound]:
        """Store every message, status and echo of one POST; returns the new inbox rows."""
        started = time.monotonic()
        new: list[StoredInbound] = []
        if batch.messages or batch.statuses or batch.echoes:
            loop = asyncio.get_running_loop()
            post = _Post(batch, loop.create_future())
            self._waiting.append(post)
            if self._storing is None:
                self._storing = loop.create_task(self._store_waiting(), name="ingest-store")
            # shield: a client that hangs up must not cancel a unit the writer may already be running.
            new = await asyncio.shield(post.future)
        if self._acked is not None:
            self._acked(time.monotonic() - started)
        self._count(batch, new)
        for stored in new:
            self._tell(stored.message.key, Inbound(stored))
        for key in {ConversationKey(e.phone_number_id, e.customer_id) for e in batch.echoes}:
            self._tell(key, Wake(human=True))
        for update in batch.template_updates:  # Meta reviewed, paused or disabled a template
            if not await apply_status_update(self._templates, update):
                log.info("template_status_for_unknown_template", template=update.name, status=update.event)
        if self._notify is not None:
            for stored in new:
                self._notify("message", conversation=stored.message.customer_id, author="customer")
            for status in batch.statuses:
                self._notify("status", wamid=status.wamid, status=status.status)
        return new

    async def close(self) -> None:
        """Let the POSTs already waiting be stored (the server stops taking new ones first)."""
        if self._storing is not None:
            await asyncio.shield(self._storing)

    async def _store_waiting(self) -> None:
        """Store what waits, a unit at a time, until nothing does; each POST's future gets its outcome."""
        posts: list[_Post] = []
        try:
            while self._waiting:
                posts = self._waiting[:MAX_POSTS_PER_UNIT]
                del self._waiting[:MAX_POSTS_PER_UNIT]
                try:
                    stored = await self._store(posts)
                except DatabaseUnavailable as exc:  # the group failed whole: nothing of these POSTs was stored
                    _fail(posts, exc)
                except Exception as exc:  # this unit failed: each POST again alone, so that only the bad one fails
                    if len(posts) == 1:
                        _fail(posts, exc)
                    else:
                        await asyncio.gather(*(self._store_alone(post) for post in posts))
                else:
                    for post, new in zip(posts, stored, strict=True):
                        _succeed(post, new)
        finally:
            self._storing = None
            # Only when cancelled: no POST is left waiting for a future nobody will set.
            _fail([*posts, *self._waiting], DatabaseUnavailable("the ingest stopped"))
            self._waiting.clear()

    async def _store_alone(self, post: _Post) -> None:
        try:
            (new,) = await self._store([post])
        except Exception as exc:
            _fail([post], exc)
        else:
            _succeed(post, new)

    async def _store(self, posts: list[_Post]) -> list[list[StoredInbound]]:
        """One unit of work for these POSTs; the new inbox rows of each, in order."""
        now = time.time()
        messages = [m for post in posts for m in post.batch.messages]
        arrivals: list[Arrival] = []
        for post in posts:  # each POST's messages, then its echoes, as they came
            arrivals += [Arrival.of(m, now) for m in post.batch.messages]
            arrivals += [Arrival(e.phone_number_id, e.customer_id, e.wa_id, e.user_id, None, now,
                                 _echo_text(e)[:200], inbound=False) for e in post.batch.echoes]
        owned = self._owned_keys(arrivals)
        stmts: list[Stmt] = conversation_sql.arrival_stmts(arrivals, now=now, owned=owned.__contains__)
        inserts = inbox_sql.insert_stmts(messages, now=now)
        first = len(stmts)
        stmts += inserts
        # One event per message stored by this unit: a wamid Meta delivered twice in it counts once.
        received = {m.wamid: _received(m) for m in reversed(messages) if m.phone_number_id != TEST_NUMBER_ID}
        stmts += received_stmts(list(received.items())[::-1], now=now)
        if messages:
            stmts += arrival_contact_stmts(
                [(m.phone_number_id, m.customer_id, m.wa_id, m.user_id, m.profile_name) for m in messages], now=now,
                owned=owned.__contains__)
        for post in posts:
            for status in post.batch.statuses:
                stmts += outbox_sql.receipt_stmts(status.wamid, status.status, status.error_code,
                                                  status.error_reason, now=now)
            for echo in post.batch.echoes:
                key = ConversationKey(echo.phone_number_id, echo.customer_id)
                stmts.append(command_sql.add_stmt(key, "echo", {"wamid": echo.wamid, "type": echo.type,
                                                               "text": _echo_text(echo)}))
        # Locked for the unit: only the rows it updates. The others it inserts (new rows lock nothing
        # another process's turn holds), so the ingest never waits for another process's group.
        results = await self._db.write(stmts, urgent=True, keys=sorted(owned))
        # A wamid twice in the unit is new once, for the first POST that had it.
        stored = {id(s.message): s for s in inbox_sql.new_rows(messages, results[first : first + len(inserts)],
                                                               now=now)}
        return [[stored[id(m)] for m in post.batch.messages if id(m) in stored] for post in posts]

    def _owned_keys(self, arrivals: list[Arrival]) -> set[tuple[str, str]]:
        keys = {(a.business, a.customer) for a in arrivals}
        if self._owns is None:
            return keys
        return {k for k in keys if self._owns(ConversationKey(*k))}

    def _count(self, batch: WebhookBatch, new: list[StoredInbound]) -> None:
        repeats = len(batch.messages) - len(new)
        self.duplicates_seen += repeats
        if self._metrics is None:
            return
        if repeats:
            self._metrics.duplicates.inc(repeats)
        for stored in new:
            if stored.message.phone_number_id != TEST_NUMBER_ID:  # test chats stay out of WhatsApp counts
                self._metrics.messages_in.labels(type=stored.message.type).inc()


def _succeed(post: _Post, new: list[StoredInbound]) -> None:
    if not post.future.done():
        post.future.set_result(new)


def _fail(posts: list[_Post], error: BaseException) -> None:
    for post in posts:
        if not post.future.done():
            post.future.set_exception(error)


def _received(m: InboundMessage) -> dict[str, Any]:
    return {"wamid": m.wamid, "phone_number_id": m.phone_number_id, "customer_id": m.customer_id, "wa_id": m.wa_id,
            "name": m.profile_name, "type": m.type, "text": m.text, "timestamp": m.timestamp}


def _echo_text(echo: BusinessEcho) -> str:
    text = echo.text or PREVIEWS.get(echo.type, f"[{echo.type}]")
    return f"[edited] {text}" if echo.type == "edit" else text
