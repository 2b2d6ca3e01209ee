"""The support desk's reads of the conversations: the inbox's tabs, label filter and search, their counts,
and how far operators have read each conversation.

Every tab is read through an index in list order (needs-human first, then most recent; migration 0007),
so its first page costs the same with 50 or 50,000 conversations. Test chats have their own tab and
stay out of every other tab and count.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.persistence.database import Database, Record, marks
from bot.persistence.search import conversation_search

Tab = Literal["all", "needs_human", "paused", "failed", "mine", "unassigned", "test"]
TABS: tuple[Tab, ...] = ("needs_human", "paused", "failed", "mine", "unassigned", "all", "test")
# Counted on the tabs (the test tab is not: test chats are out of every count).
COUNTED: tuple[Tab, ...] = ("needs_human", "paused", "failed", "mine", "unassigned", "all")
UNREAD_CAP = 100  # "99+" is all an operator needs to know; counting further would cost for nothing

# Conversations whose latest outgoing message Meta refused, or whose turn failed for good.
_FAILED = (
    "SELECT cf.id FROM outbox o JOIN conversations cf ON cf.phone_number_id = o.phone_number_id "
    "AND cf.customer_id = o.customer_id WHERE o.status = 'failed' AND NOT EXISTS (SELECT 1 FROM outbox o2 "
    "WHERE o2.phone_number_id = o.phone_number_id AND o2.customer_id = o.customer_id AND o2.id > o.id) "
    "UNION SELECT cs.id FROM conversations cs WHERE cs.state = 'failed'"
)
_ROW = (
    "SELECT c.*, k.name AS contact_name, "
    "(SELECT o.status FROM outbox o WHERE o.phone_number_id = c.phone_number_id AND o.customer_id = c.customer_id "
    "ORDER BY o.id DESC LIMIT 1) AS last_outbound_status, "
    "(SELECT COUNT(*) FROM (SELECT 1 FROM inbox i WHERE i.phone_number_id = c.phone_number_id "
    "AND i.customer_id = c.customer_id AND i.id > COALESCE((SELECT r.last_inbox_id FROM read_markers r "
    f"WHERE r.conversation_id = c.id), 0) LIMIT {UNREAD_CAP}) u) AS unread "
    "FROM conversations c LEFT JOIN contacts k ON k.phone_number_id = c.phone_number_id "
    "AND k.customer_id = c.customer_id"
)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """One page of the inbox list: a tab, optionally a label and a search."""

    tab: Tab = "all"
    user: str | None = None  # whose "mine"
    label_id: int | None = None
    text: str = ""
    limit: int = 50
    offset: int = 0


def _tab_where(tab: Tab, user: str | None, now: float, args: list[object]) -> list[str]:
    def param(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    match tab:
        case "test":
            return ["c.is_test = 1"]
        case "needs_human":
            return ["c.is_test = 0", "c.needs_human = 1", "c.paused = 1"]
        case "paused":
            return ["c.is_test = 0", "c.paused = 1", "c.needs_human = 0",
                    f"(c.paused_until IS NULL OR c.paused_until > {param(now)})"]
        case "failed":
            return ["c.is_test = 0", f"c.id IN ({_FAILED})"]
        case "mine":
            return [f"c.assigned_to = {param(user or '')}", "c.is_test = 0"]
        case "unassigned":
            return ["c.assigned_to IS NULL", "c.is_test = 0"]
        case _:
            return ["c.is_test = 0"]


class DeskRepo:
    """The inbox list, its counts, and read markers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _where(self, query: ListQuery, now: float) -> tuple[str, list[object]] | None:
        """The WHERE clause and its parameters; None when the search cannot match anything."""
        args: list[object] = []
        where = _tab_where(query.tab, query.user, now, args)
        if query.label_id is not None:
            args.append(query.label_id)
            where.append(f"c.id IN (SELECT cl.conversation_id FROM conversation_labels cl WHERE cl.label_id = "
                         f"${len(args)})")
        text = query.text.replace("\x00", "").strip()
        if text:
            search = conversation_search(self.db.dialect, text, start=len(args) + 1)
            if search.empty:
                return None
            args += search.args
            where.append(f"c.id IN ({search.sql})")
        return " AND ".join(where), args

    def page_sql(self, query: ListQuery, now: float) -> tuple[str, list[object]] | None:
        """The SQL of one page (EXPLAIN QUERY PLAN looks at it in the tests); None when nothing can match."""
        built = self._where(query, now)
        if built is None:
            return None
        where, args = built
        n = len(args)
        return (f"{_ROW} WHERE {where} ORDER BY c.needs_human DESC, c.last_activity_at DESC "
                f"LIMIT ${n + 1} OFFSET ${n + 2}", [*args, query.limit, query.offset])

    async def page(self, query: ListQuery, *, now: float | None = None) -> list[Record]:
        """One page of conversations (`SELECT c.*` plus contact_name, last_outbound_status and unread)."""
        built = self.page_sql(query, now or time.time())
        if built is None:
            return []
        sql, args = built
        return await self.db.fetch(sql, *args)

    async def counts(self, user: str | None, *, now: float | None = None) -> dict[str, int]:
        """How many conversations each tab holds (test chats in none of them)."""
        now = now or time.time()
        selects: list[str] = []
        args: list[object] = []
        for tab in COUNTED:
            if tab == "failed":
                # Few conversations fail: count from them (CROSS JOIN keeps SQLite to that order), rather than
                # walk every conversation and look each up in the failed set.
                selects.append(f"(SELECT COUNT(*) FROM ({_FAILED}) f CROSS JOIN conversations c "
                               "WHERE c.id = f.id AND c.is_test = 0) AS n_failed")
                continue
            where = " AND ".join(_tab_where(tab, user, now, args))
            selects.append(f"(SELECT COUNT(*) FROM conversations c WHERE {where}) AS n_{tab}")
        row = await self.db.fetchrow("SELECT " + ", ".join(selects), *args)
        assert row is not None
        return {tab: int(row[f"n_{tab}"] or 0) for tab in COUNTED}

    async def labels_of(self, conversation_ids: Sequence[int]) -> dict[int, list[dict[str, object]]]:
        """The labels of some conversations, by conversation id, in name order."""
        if not conversation_ids:
            return {}
        rows = await self.db.fetch(
            "SELECT cl.conversation_id, l.id, l.name, l.color FROM conversation_labels cl JOIN labels l "
            f"ON l.id = cl.label_id WHERE cl.conversation_id IN ({marks(len(conversation_ids))}) ORDER BY l.name_key",
            *conversation_ids,
        )
        found: dict[int, list[dict[str, object]]] = {}
        for r in rows:
            found.setdefault(int(r["conversation_id"]), []).append(
                {"id": r["id"], "name": r["name"], "color": r["color"]})
        return found

    async def mark_read(self, conversation_id: int, *, up_to: int | None, user: str | None) -> int:
        """An operator saw the conversation up to a customer message (default: the latest); returns the marker.

        The marker only moves forward: a browser tab showing an older state cannot mark messages unread.
        """
        latest = await self.db.fetchval(
            "SELECT MAX(i.id) FROM inbox i JOIN conversations c ON c.phone_number_id = i.phone_number_id "
            "AND c.customer_id = i.customer_id WHERE c.id = $1", conversation_id)
        target = int(latest or 0) if up_to is None else min(up_to, int(latest or 0))
        await self.db.execute(
            "INSERT INTO read_markers (conversation_id, last_inbox_id, read_at, read_by) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (conversation_id) DO UPDATE SET "
            "last_inbox_id = CASE WHEN excluded.last_inbox_id > read_markers.last_inbox_id "
            "THEN excluded.last_inbox_id ELSE read_markers.last_inbox_id END, "
            "read_at = excluded.read_at, read_by = excluded.read_by",
            conversation_id, target, time.time(), user,
        )
        return int(await self.db.fetchval(
            "SELECT last_inbox_id FROM read_markers WHERE conversation_id = $1", conversation_id) or 0)

    async def past_conversations(self, conversation_id: int, wa_id: str | None) -> list[Record]:
        """The same person's conversations on the business's other numbers (same wa_id), most recent first."""
        if not wa_id:
            return []
        return await self.db.fetch(
            "SELECT c.id, c.phone_number_id, c.customer_id, c.wa_id, c.last_activity_at, c.last_message_preview "
            "FROM conversations c WHERE c.wa_id = $1 AND c.id <> $2 AND c.is_test = 0 "
            "ORDER BY c.last_activity_at DESC LIMIT 20",
            wa_id, conversation_id,
        )
