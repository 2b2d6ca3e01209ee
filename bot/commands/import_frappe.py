"""Import the Frappe AI module's session files so existing conversations keep their context."""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bot.configuration.config import Config
from bot.persistence.database import Database
from bot.texts import plural

THREADS = "ai_whatsapp_threads.json"  # phone → session id
RESPONSES = "ai_whatsapp_responses.json"  # session id → last response id
LANGUAGES = "ai_whatsapp_lang.json"  # phone → language code
HANDOFF = "ai_whatsapp_handoff.json"  # phone → epoch seconds of the last human message

_LANG = re.compile(r"^[a-z]{2,3}(-[a-z]{2,4})?$")


@dataclass
class Report:
    """What the import found, to print for the operator."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _digits(phone: str) -> str | None:
    digits = re.sub(r"\D", "", phone)
    return digits if 6 <= len(digits) <= 16 else None


def _load(folder: Path, name: str, report: Report, *, required: bool) -> dict[str, Any] | None:
    """A file's JSON object, or None (missing, unreadable, or not an object: reported, never half-used)."""
    path = folder / name
    if not path.exists():
        if required:
            report.problems.append(f"{name}: not found in {folder}; nothing can be imported without it")
        else:
            report.notes.append(f"{name}: not found, skipped")
        return None
    try:
        raw = path.read_bytes().strip()
        data = orjson.loads(raw) if raw else {}
    except (OSError, orjson.JSONDecodeError) as exc:
        report.problems.append(f"{name}: not valid JSON ({exc}); the whole file was skipped")
        return None
    if not isinstance(data, dict):
        report.problems.append(f"{name}: expected a JSON object of key → value; the whole file was skipped")
        return None
    return data


def _validated(name: str, data: dict[str, Any] | None, check: Any, report: Report) -> dict[str, Any]:
    """Every entry must pass, or the file is skipped whole: a half-valid file is a damaged file."""
    if data is None:
        return {}
    bad = [key for key, value in data.items() if not check(key, value)]
    if bad:
        sample = ", ".join(repr(k)[:40] for k in bad[:3])
        report.problems.append(f"{name}: {len(bad)} malformed entr{'y' if len(bad) == 1 else 'ies'} "
                               f"(e.g. {sample}); the whole file was skipped")
        return {}
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def import_sessions(config: Config, folder: Path, phone_number_id: str, *, now: float | None = None) -> Report:
    """Validate all four files, then write what is valid in one transaction."""
    report = Report()
    now = time.time() if now is None else now
    threads = _validated(THREADS, _load(folder, THREADS, report, required=True),
                         lambda k, v: _digits(k) is not None and isinstance(v, str) and 0 < len(v) <= 200, report)
    responses = _validated(RESPONSES, _load(folder, RESPONSES, report, required=False),
                           lambda k, v: isinstance(v, str) and v.startswith("resp_"), report)
    languages = _validated(LANGUAGES, _load(folder, LANGUAGES, report, required=False),
                           lambda k, v: _digits(k) is not None and isinstance(v, str) and bool(_LANG.match(v.lower())),
                           report)
    handoff = _validated(HANDOFF, _load(folder, HANDOFF, report, required=False),
                         lambda k, v: _digits(k) is not None and _is_number(v), report)
    if not threads:
        return report
    by_digits_lang = {_digits(k): v.lower() for k, v in languages.items()}
    by_digits_handoff = {_digits(k): float(v) for k, v in handoff.items()}
    cooldown = config.human_cooldown_seconds
    db = Database.create(config.database_url)
    await db.open()
    imported = updated = 0
    try:
        async with db.transaction() as tx:
            for phone, session_id in threads.items():
                wa_id = _digits(phone)
                assert wa_id is not None
                response_id = responses.get(session_id)
                language = by_digits_lang.get(wa_id)
                last_human = by_digits_handoff.get(wa_id)
                paused_until = last_human + cooldown if last_human and cooldown > 0 and last_human + cooldown > now \
                    else None
                existing = await tx.fetchval(
                    "SELECT id FROM conversations WHERE phone_number_id = $1 AND (customer_id = $2 OR wa_id = $2)",
                    phone_number_id, wa_id,
                )
                if existing is None:
                    await tx.execute(
                        "INSERT INTO conversations (phone_number_id, customer_id, wa_id, session_id, last_response_id, "
                        "last_response_at, language, paused, paused_until, created_at, updated_at, last_activity_at) "
                        "VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
                        phone_number_id, wa_id, session_id, response_id, now if response_id else None,
                        language, int(paused_until is not None), paused_until, now, last_human or now,
                    )
                    imported += 1
                else:
                    await tx.execute(
                        "UPDATE conversations SET last_response_id = COALESCE($1, last_response_id), "
                        "last_response_at = COALESCE($2, last_response_at), language = COALESCE($3, language), "
                        "updated_at = $4 WHERE id = $5",
                        response_id, now if response_id else None, language, now, existing,
                    )
                    updated += 1
            orphans = set(responses) - set(threads.values())
            if orphans:
                report.notes.append(f"{RESPONSES}: {plural(len(orphans), 'response id')} "
                                    f"{'belongs' if len(orphans) == 1 else 'belong'} to no session in {THREADS}; "
                                    "skipped")
    finally:
        await db.close()
    report.notes.insert(0, f"imported {plural(imported, 'new conversation')}, "
                           f"updated {plural(updated, 'existing one')}")
    return report


async def run(config: Config, argv: list[str]) -> int:
    """Import ai_whatsapp_{threads,responses,lang,handoff}.json from the Frappe module's private files."""
    parser = argparse.ArgumentParser(prog="run.py import-frappe-sessions", description=run.__doc__)
    parser.add_argument("directory", help="the site's private/files folder holding the JSON files")
    parser.add_argument("--phone-number-id", default=config.whatsapp_phone_number_id,
                        help="the business number id these conversations belong to (WHATSAPP_PHONE_NUMBER_ID)")
    args = parser.parse_args(argv)
    if not args.phone_number_id:
        print("error: set WHATSAPP_PHONE_NUMBER_ID or pass --phone-number-id: conversations belong to a number")
        return 2
    folder = Path(args.directory)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder")
        return 2
    report = await import_sessions(config, folder, args.phone_number_id)
    for line in report.notes:
        print(line)
    for line in report.problems:
        print(f"problem: {line}")
    return 1 if report.problems and not any(n.startswith("imported") for n in report.notes) else 0
