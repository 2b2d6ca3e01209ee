"""The AI Assistant Settings row and the knowledge base's state and local full-text index."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from bot.domain.knowledge import KnowledgeDoc, SearchHit
from bot.persistence.database import TS_CONFIG, Database, Stmt, ts_query


@dataclass(frozen=True, slots=True)
class StoredAssistantSettings:
    """What the settings page saved. None means "not set": the env value applies."""

    use_stored: bool = False
    openai_api_key_enc: str | None = None
    model: str | None = None
    instructions: str | None = None
    client_name: str | None = None
    autoreply: bool | None = None
    reaction: bool | None = None
    reaction_emoji: str | None = None
    human_cooldown_seconds: int | None = None
    burst_window_ms: int | None = None
    kb_enabled: bool = False
    kb_mode: str = "openai"
    updated_at: float | None = None
    updated_by: str | None = None


def _upsert_sql(table: str, columns: list[str]) -> str:
    """Insert or replace the table's single row (id = 1)."""
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    return (f"INSERT INTO {table} (id, {', '.join(columns)}) VALUES (1, {values}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}")


_BOOLS = {"use_stored", "autoreply", "reaction", "kb_enabled"}
_COLUMNS = [f.name for f in fields(StoredAssistantSettings)]


class AssistantSettingsRepo:
    """Reads and writes the single settings row."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self) -> StoredAssistantSettings:
        """The saved settings (all defaults when the page was never saved)."""
        row = await self.db.fetchrow("SELECT * FROM assistant_settings WHERE id = 1")
        if row is None:
            return StoredAssistantSettings()
        values: dict[str, Any] = {}
        for name in _COLUMNS:
            value = row[name]
            values[name] = bool(value) if name in _BOOLS and value is not None else value
        return StoredAssistantSettings(**values)

    async def save(self, settings: StoredAssistantSettings, *, updated_by: str | None) -> None:
        """Replace the row."""
        data = asdict(settings)
        data["updated_at"] = time.time()
        data["updated_by"] = updated_by
        for name in _BOOLS:
            if data[name] is not None:
                data[name] = int(data[name])
        await self.db.execute(_upsert_sql("assistant_settings", _COLUMNS), *(data[c] for c in _COLUMNS))


_DOC_COLUMNS = [f.name for f in fields(KnowledgeDoc)]
# Local search: FTS5's snippet() and bm25 on SQLite; on PostgreSQL the generated tsvector, ranked by
# ts_rank, with ts_headline cutting the passage.
_QUOTED = re.compile(r'"([^"]*)"')
_FTS5_SEARCH_SQL = (
    "SELECT page, snippet(kb_pages, 0, '', '', ' … ', 48) AS passage FROM kb_pages "
    "WHERE kb_pages MATCH $1 ORDER BY bm25(kb_pages) LIMIT $2"
)
_PG_SEARCH_SQL = (
    f"SELECT page, ts_headline('{TS_CONFIG}', text, q, 'StartSel=\"\", StopSel=\"\", MaxWords=48, MinWords=16, "
    f"MaxFragments=2, FragmentDelimiter=\" … \"') AS passage FROM kb_pages, to_tsquery('{TS_CONFIG}', $1) q "
    "WHERE search @@ q ORDER BY ts_rank(search, q) DESC, page LIMIT $2"
)


class KnowledgeRepo:
    """The knowledge base row (one PDF at a time) and the local full-text index of its pages."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self) -> KnowledgeDoc | None:
        """The current document, if any."""
        row = await self.db.fetchrow("SELECT * FROM knowledge_base WHERE id = 1")
        if row is None:
            return None
        return KnowledgeDoc(**{name: row[name] for name in _DOC_COLUMNS})

    async def put(self, doc: KnowledgeDoc) -> None:
        """Create or replace the document row."""
        data = asdict(doc)
        await self.db.execute(_upsert_sql("knowledge_base", _DOC_COLUMNS), *(data[c] for c in _DOC_COLUMNS))

    async def set_pages(self, pages: Sequence[str]) -> None:
        """Replace the local index with these pages (numbered from 1)."""
        rows = [(text, number) for number, text in enumerate(pages, start=1) if text.strip()]
        unit = [Stmt("DELETE FROM kb_pages")]
        if rows:
            unit.append(Stmt("INSERT INTO kb_pages (text, page) VALUES ($1, $2)", many=rows))
        await self.db.write(unit)

    async def page_count(self) -> int:
        """How many pages the local index holds."""
        return int(await self.db.fetchval("SELECT COUNT(*) FROM kb_pages") or 0)

    async def search(self, query: str, limit: int) -> list[SearchHit]:
        """Best-matching pages for an FTS5 query of quoted words (bot.ai.knowledge.fts_query), with the passage."""
        if self.db.dialect == "postgres":
            # The same words, any of which may match; ts_headline cuts the passage as snippet() does.
            words = " ".join(_QUOTED.findall(query)) or query
            tsquery = ts_query(words, any_word=True, prefix=False)
            if tsquery is None:
                return []
            rows = await self.db.fetch(_PG_SEARCH_SQL, tsquery, limit)
        else:
            rows = await self.db.fetch(_FTS5_SEARCH_SQL, query, limit)
        return [SearchHit(page=int(r["page"]), text=r["passage"]) for r in rows]
