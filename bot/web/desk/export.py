"""Exports: one conversation, or every WhatsApp conversation within a date range, as CSV or JSON.

Streamed: rows are read a page at a time and written out as they come, so an export of a year does not
sit in memory. Messages carry direction, author, type, text, status and created_at; the team's private
notes come after them (JSON: their own list; CSV: rows whose `record` is `note`). Each export is written
to the audit log.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from bot.persistence.export import Row
from bot.web.auth import audit_fields
from bot.web.desk.dates import day_range
from bot.web.jsonapi import conversation_of, refuse
from bot.web.keys import REPOS

routes = web.RouteTableDef()

FORMATS = ("csv", "json")
COLUMNS = ("record", "phone_number_id", "customer_id", "direction", "author", "type", "text", "status",
           "created_at", "created_at_iso")
# A cell that a spreadsheet would run as a formula (a customer can write "=HYPERLINK(…)").
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_FLUSH_BYTES = 64 * 1024


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


def _item(row: Row) -> dict[str, Any]:
    item = {k: row[k] for k in ("phone_number_id", "customer_id", "direction", "author", "type", "text", "status",
                                "created_at")}
    item["created_at_iso"] = _iso(row["created_at"])
    return item


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


class _Out:
    """Buffers what is written and sends it in chunks of about 64 KiB."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._buffer = io.BytesIO()

    async def write(self, data: bytes) -> None:
        self._buffer.write(data)
        if self._buffer.tell() >= _FLUSH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        await self._response.write(self._buffer.getvalue())
        self._buffer = io.BytesIO()


async def _json(out: _Out, head: dict[str, Any], messages: AsyncIterator[Row], notes: AsyncIterator[Row]) -> None:
    await out.write(orjson.dumps(head)[:-1] + (b"," if head else b""))
    for name, rows in ((b"messages", messages), (b"notes", notes)):
        await out.write(b'"' + name + b'":[')
        first = True
        async for row in rows:
            await out.write((b"" if first else b",") + orjson.dumps(_item(row)))
            first = False
        await out.write(b"]" + (b"," if name == b"messages" else b"}"))


async def _csv(out: _Out, messages: AsyncIterator[Row], notes: AsyncIterator[Row]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for record, rows in (("message", messages), ("note", notes)):
        async for row in rows:
            item = _item(row)
            writer.writerow([record, *(_cell(item[c]) for c in COLUMNS[1:])])
            if text.tell() > _FLUSH_BYTES:
                await out.write(text.getvalue().encode())
                text.seek(0)
                text.truncate()
    await out.write(text.getvalue().encode())


async def _stream(request: web.Request, fmt: str, filename: str, head: dict[str, Any],
                  messages: AsyncIterator[Row], notes: AsyncIterator[Row]) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/json",
        "Content-Disposition": f'attachment; filename="{filename}.{fmt}"',
    })
    await response.prepare(request)
    out = _Out(response)
    if fmt == "csv":
        await out.write("\ufeff".encode())  # so that spreadsheet programs read the accents as UTF-8
        await _csv(out, messages, notes)
    else:
        await _json(out, head, messages, notes)
    await out.flush()
    await response.write_eof()
    return response


def _format(request: web.Request) -> str | None:
    fmt = request.query.get("format", "csv")
    return fmt if fmt in FORMATS else None


@routes.get("/api/conversations/{wa_id}/export")
async def export_conversation(request: web.Request) -> web.StreamResponse:
    """One conversation's messages and notes: ?format=csv (default) or json."""
    conv = await conversation_of(request)
    fmt = _format(request)
    if fmt is None:
        return refuse(400, "format is csv or json")
    repos = request.app[REPOS]
    await repos.audit.record("export_conversation", detail=f"{conv.session_id} ({fmt})", **audit_fields(request))
    head = {"conversation": {"phone_number_id": conv.phone_number_id, "customer_id": conv.customer_id,
                             "wa_id": conv.wa_id, "name": conv.profile_name, "is_test": conv.is_test},
            "exported_at": time.time()}
    safe = "".join(ch for ch in conv.customer_id if ch.isalnum() or ch in "-_.")[:40] or "conversation"
    return await _stream(request, fmt, f"conversation-{safe}", head, repos.exports.messages(key=conv.key),
                         repos.exports.notes(conversation_id=conv.id))


@routes.get("/api/export")
async def export_range(request: web.Request) -> web.StreamResponse:
    """Every WhatsApp conversation's messages and notes within ?from= and ?to= (days, `to` included)."""
    fmt = _format(request)
    if fmt is None:
        return refuse(400, "format is csv or json")
    if not request.query.get("from") or not request.query.get("to"):
        return refuse(400, 'give the range as ?from=2025-03-01&to=2025-03-31 (days, "to" included)')
    since, until = day_range(request.query["from"], request.query["to"])
    assert since is not None and until is not None
    repos = request.app[REPOS]
    await repos.audit.record("export_range", detail=f"{request.query['from'][:20]}..{request.query['to'][:20]} "
                                                    f"({fmt})", **audit_fields(request))
    head = {"from": since, "to": until, "exported_at": time.time()}
    first, last = (time.strftime("%Y%m%d", time.localtime(t)) for t in (since, until - 1))
    name = f"messages-{first}-{last}"
    return await _stream(request, fmt, name, head, repos.exports.messages(since=since, until=until),
                         repos.exports.notes(since=since, until=until))
