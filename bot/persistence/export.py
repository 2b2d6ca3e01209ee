"""Exports: a conversation's (or a date range's) messages and notes, read a page at a time.

Each source is read with keyset paging (never OFFSET), so an export of a year costs one index range
scan, and the caller can stream rows out as they come. Customer messages (inbox) and the business's
(outbox) are merged by time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from bot.domain.conversation import ConversationKey
from bot.persistence.conversations import TEST_NUMBER_ID
from bot.persistence.database import Database, Record

PAGE = 500
Row = dict[str, Any]

_INBOX = ("SELECT id, phone_number_id, customer_id, 'in' AS direction, 'customer' AS author, type, text, status, "
          "received_at AS created_at FROM inbox")
_OUTBOX = ("SELECT id, phone_number_id, customer_id, 'out' AS direction, author, kind AS type, text, status, "
           "created_at FROM outbox")
_NOTES = ("SELECT n.id, c.phone_number_id, c.customer_id, 'note' AS direction, n.author, 'note' AS type, n.text, "
          "NULL AS status, n.created_at FROM notes n JOIN conversations c ON c.id = n.conversation_id")

Pager = Callable[[Row | None], tuple[str, tuple[Any, ...]]]


def _row(record: Record) -> Row:
    return {k: record[k] for k in ("id", "phone_number_id", "customer_id", "direction", "author", "type", "text",
                                   "status", "created_at")}


async def _pages(db: Database, page: Pager) -> AsyncIterator[Row]:
    last: Row | None = None
    while True:
        sql, args = page(last)
        rows = await db.fetch(sql, *args, PAGE)
        for record in rows:
            last = _row(record)
            yield last
        if len(rows) < PAGE:
            return


async def _merged(a: AsyncIterator[Row], b: AsyncIterator[Row]) -> AsyncIterator[Row]:
    """Two time-ordered streams as one."""
    x, y = await anext(a, None), await anext(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x["created_at"] <= y["created_at"]):
            assert x is not None
            yield x
            x = await anext(a, None)
        else:
            yield y
            y = await anext(b, None)


def _by_key(select: str, key: ConversationKey) -> Pager:
    def page(last: Row | None) -> tuple[str, tuple[Any, ...]]:
        return (f"{select} WHERE phone_number_id = $1 AND customer_id = $2 AND id > $3 ORDER BY id LIMIT $4",
                (key.business, key.customer, last["id"] if last else 0))
    return page


def _by_time(select: str, since: float, until: float, *, at: str, ident: str, business: str) -> Pager:
    def page(last: Row | None) -> tuple[str, tuple[Any, ...]]:
        t, after = (last["created_at"], last["id"]) if last else (since, 0)
        # A (time, id) keyset: the range scan starts at the last row's time, ties broken by id.
        return (f"{select} WHERE {at} >= $1 AND {at} < $2 AND {business} <> $3 AND {at} >= $4 "
                f"AND ({at} > $4 OR {ident} > $5) ORDER BY {at}, {ident} LIMIT $6",
                (since, until, TEST_NUMBER_ID, t, after))
    return page


class ExportRepo:
    """Reads for exports."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def messages(self, *, key: ConversationKey | None = None, since: float = 0.0,
                 until: float = float("inf")) -> AsyncIterator[Row]:
        """One conversation's messages, or every WhatsApp conversation's within [since, until), oldest first."""
        if key is not None:
            return _merged(_pages(self.db, _by_key(_INBOX, key)), _pages(self.db, _by_key(_OUTBOX, key)))
        return _merged(_pages(self.db, _by_time(_INBOX, since, until, at="received_at", ident="id",
                                                        business="phone_number_id")),
                       _pages(self.db, _by_time(_OUTBOX, since, until, at="created_at", ident="id",
                                                        business="phone_number_id")))

    def notes(self, *, conversation_id: int | None = None, since: float = 0.0,
              until: float = float("inf")) -> AsyncIterator[Row]:
        """One conversation's private notes, or every WhatsApp conversation's within [since, until)."""
        if conversation_id is not None:
            def page(last: Row | None) -> tuple[str, tuple[Any, ...]]:
                return (f"{_NOTES} WHERE n.conversation_id = $1 AND n.id > $2 ORDER BY n.id LIMIT $3",
                        (conversation_id, last["id"] if last else 0))
            return _pages(self.db, page)
        return _pages(self.db, _by_time(_NOTES, since, until, at="n.created_at", ident="n.id",
                                                 business="c.phone_number_id"))
