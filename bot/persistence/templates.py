"""The WhatsApp message templates table: the set from the last full sync, plus later status changes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.persistence.database import Database, Record, Stmt, row_to


class TemplateFields(Protocol):
    """What a synced template brings (bot.whatsapp.templates.Template has these)."""

    @property
    def name(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def template_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def category(self) -> str | None: ...
    @property
    def body_text(self) -> str | None: ...
    @property
    def parameter_count(self) -> int: ...
    @property
    def components_json(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StoredTemplate:
    """One template of a WABA as stored; `reason` is Meta's, for a rejection or a pause."""

    waba_id: str
    name: str
    language: str
    template_id: str | None
    status: str
    category: str | None
    body_text: str | None
    parameter_count: int
    components_json: str
    reason: str | None
    synced_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Record) -> StoredTemplate:
        """Build from a `SELECT *` row."""
        return row_to(cls, row)


class TemplateRepo:
    """Templates by (WABA, name, language). A full sync replaces a WABA's set in one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def replace_all(self, waba_id: str, templates: Sequence[TemplateFields]) -> int:
        """Make `templates` the WABA's whole set (templates deleted at Meta disappear); returns the count."""
        now = time.time()
        rows = [(waba_id, t.name, t.language, t.template_id, t.status, t.category, t.body_text, t.parameter_count,
                 t.components_json, now, now) for t in templates]
        unit = [Stmt("DELETE FROM whatsapp_templates WHERE waba_id = $1", (waba_id,))]
        if rows:
            unit.append(Stmt(
                "INSERT INTO whatsapp_templates (waba_id, name, language, template_id, status, category, body_text, "
                "parameter_count, components_json, synced_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", many=rows))
        await self.db.write(unit)  # one unit: the old set is replaced whole, or not at all
        return len(rows)

    async def apply_status(self, *, waba_id: str | None, template_id: str | None, name: str | None,
                           language: str | None, status: str, reason: str | None) -> bool:
        """Set one template's status, found by Meta's id, else by name and language; False when unknown."""
        now = time.time()
        if template_id is not None:
            changed = await self.db.execute(
                "UPDATE whatsapp_templates SET status = $1, reason = $2, updated_at = $3 WHERE template_id = $4",
                status, reason, now, template_id,
            )
            if changed:
                return True
        if name is None or language is None:
            return False
        changed = await self.db.execute(
            "UPDATE whatsapp_templates SET status = $1, reason = $2, updated_at = $3, "
            "template_id = COALESCE(template_id, $4) WHERE name = $5 AND language = $6 "
            "AND (CAST($7 AS TEXT) IS NULL OR waba_id = $7)",
            status, reason, now, template_id, name, language, waba_id,
        )
        return changed > 0

    async def get(self, name: str, language: str, *, waba_id: str | None = None) -> StoredTemplate | None:
        """One template by name and language code (in any WABA unless `waba_id` is given)."""
        row = await self.db.fetchrow(
            "SELECT * FROM whatsapp_templates WHERE name = $1 AND language = $2 "
            "AND (CAST($3 AS TEXT) IS NULL OR waba_id = $3) ORDER BY waba_id LIMIT 1",
            name, language, waba_id,
        )
        return None if row is None else StoredTemplate.from_row(row)

    async def all(self, *, waba_id: str | None = None, name: str | None = None) -> list[StoredTemplate]:
        """Templates by name then language, optionally of one WABA or one name."""
        rows = await self.db.fetch(
            "SELECT * FROM whatsapp_templates WHERE (CAST($1 AS TEXT) IS NULL OR waba_id = $1) "
            "AND (CAST($2 AS TEXT) IS NULL OR name = $2) ORDER BY name, language, waba_id",
            waba_id, name,
        )
        return [StoredTemplate.from_row(r) for r in rows]
