"""Full-text search over contacts and message text, accents and case ignored, on either backend.

SQLite: the FTS5 tables of migration 0007 (`unicode61 remove_diacritics 2`, kept in step by triggers).
PostgreSQL: GIN indexes on `to_tsvector('simple', desk_unaccent(...))`; the expressions below are the
indexed ones, letter for letter, or the indexes would not serve them.

Every word must match (as a prefix: "integ" finds "integrale"), in a contact (name, email, company,
notes, number) or in one message. German spellings without umlauts are tried too: "mueller" finds
"Müller" and "Müller" finds "Mueller". A query that looks like a phone number also finds the numbers
that contain it ("333 111 0002" finds +39 333 111 0002).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.persistence.database import Dialect

# Letters and digits; "_" separates words, as it does for both tokenizers.
_WORD = re.compile(r"[^\W_]+")
_NUMBER = re.compile(r"^\+?[\d\s().\-/]+$")
MAX_WORDS = 8
# Of a common word only the most recent matching messages are looked at: the first page of a search must
# not depend on how often the word was ever written.
MESSAGE_HITS = 2000
_TO_PLAIN = (("ae", "a"), ("oe", "o"), ("ue", "u"))
_TO_DIGRAPH = (("ä", "ae"), ("ö", "oe"), ("ü", "ue"))

CONTACT_TEXT_PG = (
    "to_tsvector('simple', desk_unaccent(coalesce(k.name, '') || ' ' || coalesce(k.email, '') || ' ' || "
    "coalesce(k.company, '') || ' ' || coalesce(k.notes, '') || ' ' || coalesce(k.wa_id, '')))"
)


def words(text: str) -> list[str]:
    """The words of a query, lower-cased, at most MAX_WORDS."""
    return _WORD.findall(text.lower())[:MAX_WORDS]


def variants(word: str) -> list[str]:
    """A word and its other German spellings: mueller → muller (what "Müller" is indexed as), müller → mueller."""
    found = [word]
    plain = word
    for digraph, letter in _TO_PLAIN:
        plain = plain.replace(digraph, letter)
    digraphs = word
    for umlaut, digraph in _TO_DIGRAPH:
        digraphs = digraphs.replace(umlaut, digraph)
    if "ss" in word:
        found.append(word.replace("ss", "ß"))
    for other in (plain, digraphs):
        if other not in found:
            found.append(other)
    return found


def number_digits(text: str) -> str | None:
    """The digits of a query that is a phone number (or part of one, at least 3 digits), else None."""
    if not _NUMBER.match(text.strip()):
        return None
    digits = "".join(ch for ch in text if ch.isdigit())
    return digits if len(digits) >= 3 else None


def fts5_query(found: list[str]) -> str:
    """An FTS5 query: every word (any of its spellings) as a quoted prefix, so no FTS syntax gets through."""
    terms = [" OR ".join(f'"{v}"*' for v in variants(w)) for w in found]
    return " AND ".join(t if " OR " not in t else f"({t})" for t in terms)


def tsquery(found: list[str]) -> str:
    """The PostgreSQL twin of `fts5_query` for to_tsquery('simple', …): words are letters and digits only."""
    return " & ".join("(" + " | ".join(f"{v}:*" for v in variants(w)) + ")" for w in found)


@dataclass(frozen=True, slots=True)
class Search:
    """A conversation search: SQL that selects matching conversation ids, and its parameters."""

    sql: str
    args: tuple[object, ...]

    @property
    def empty(self) -> bool:
        """True when the query has nothing to look for (only punctuation): it finds nothing."""
        return not self.sql


def conversation_search(dialect: Dialect, text: str, *, start: int) -> Search:
    """`SELECT id FROM …` of the conversations matching `text`; placeholders from `$start` on."""
    found = words(text)
    digits = number_digits(text)
    parts: list[str] = []
    args: list[object] = []
    if found:
        n = start
        args.append(fts5_query(found) if dialect == "sqlite" else tsquery(found))
        if dialect == "postgres":
            match = f"@@ to_tsquery('simple', desk_unaccent(${n}))"
            parts += [
                "SELECT cc.id FROM contacts k JOIN conversations cc ON cc.phone_number_id = k.phone_number_id "
                f"AND cc.customer_id = k.customer_id WHERE {CONTACT_TEXT_PG} {match}",
                *(f"SELECT cm.id FROM (SELECT m.phone_number_id, m.customer_id FROM {table} m "
                  f"WHERE to_tsvector('simple', desk_unaccent(coalesce(m.text, ''))) {match} "
                  f"ORDER BY m.id DESC LIMIT {MESSAGE_HITS}) h JOIN conversations cm "
                  "ON cm.phone_number_id = h.phone_number_id AND cm.customer_id = h.customer_id"
                  for table in ("inbox", "outbox")),
            ]
        else:
            parts += [
                "SELECT cc.id FROM contacts_fts JOIN contacts k ON k.id = contacts_fts.rowid JOIN conversations cc "
                f"ON cc.phone_number_id = k.phone_number_id AND cc.customer_id = k.customer_id "
                f"WHERE contacts_fts MATCH ${n}",
                *(f"SELECT cm.id FROM (SELECT rowid AS id FROM {table}_fts WHERE {table}_fts MATCH ${n} "
                  f"ORDER BY rowid DESC LIMIT {MESSAGE_HITS}) h JOIN {table} m ON m.id = h.id "
                  "JOIN conversations cm ON cm.phone_number_id = m.phone_number_id AND cm.customer_id = m.customer_id"
                  for table in ("inbox", "outbox")),
            ]
    if digits:
        n = start + len(args)
        args.append(f"%{digits}%")
        # A scan of the narrow wa_id index, not of the table (customers known only by a BSUID have no number).
        parts.append(f"SELECT cn.id FROM conversations cn WHERE cn.wa_id LIKE ${n}")
    return Search(" UNION ".join(parts), tuple(args))
