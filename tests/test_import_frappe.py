"""python run.py import-frappe-sessions: valid files imported, bad ones reported and skipped whole."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson

from bot.commands.import_frappe import import_sessions
from bot.configuration.config import Config
from bot.persistence.database import Database
from tests.backend import config_for, env_for, has_data, query

ROOT = Path(__file__).resolve().parents[1]


def write(folder: Path, name: str, data: object) -> None:
    """Write one of the module's JSON files."""
    (folder / name).write_bytes(data if isinstance(data, bytes) else orjson.dumps(data))


async def rows(config: Config) -> list[dict[str, object]]:
    """The conversations table."""
    db = Database.create(config.database_url)
    await db.open()
    try:
        return [dict(r) for r in await db.fetch("SELECT * FROM conversations ORDER BY wa_id")]
    finally:
        await db.close()


async def test_valid_files_are_imported(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    now = time.time()
    write(files, "ai_whatsapp_threads.json", {"+393331234567": "session_1", "393479876543": "session_2"})
    write(files, "ai_whatsapp_responses.json", {"session_1": "resp_abc", "session_9": "resp_orphan"})
    write(files, "ai_whatsapp_lang.json", {"+393331234567": "it", "+393479876543": "en"})
    write(files, "ai_whatsapp_handoff.json", {"+393331234567": now - 60, "+393479876543": now - 10_000})
    config = config_for(tmp_path / "data", human_cooldown_seconds=300)
    report = await import_sessions(config, files, "100000000000001", now=now)
    assert report.problems == []
    assert any("1 response id belongs to no session" in n for n in report.notes)
    got = await rows(config)
    assert [(r["wa_id"], r["session_id"], r["last_response_id"], r["language"]) for r in got] == [
        ("393331234567", "session_1", "resp_abc", "it"),
        ("393479876543", "session_2", None, "en"),
    ]
    assert got[0]["paused"] == 1 and abs(float(got[0]["paused_until"]) - (now + 240)) < 1  # type: ignore[arg-type]
    assert got[1]["paused"] == 0
    # Running it again updates instead of duplicating.
    write(files, "ai_whatsapp_responses.json", {"session_2": "resp_new"})
    await import_sessions(config, files, "100000000000001", now=now)
    again = await rows(config)
    assert len(again) == 2 and again[1]["last_response_id"] == "resp_new"


async def test_bad_files_are_skipped_whole_and_reported(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    write(files, "ai_whatsapp_threads.json", {"+393331234567": "session_1"})
    write(files, "ai_whatsapp_responses.json", b"{not json")
    write(files, "ai_whatsapp_lang.json", {"+393331234567": "it", "+39000": 5})
    write(files, "ai_whatsapp_handoff.json", ["not", "an", "object"])
    config = config_for(tmp_path / "data")
    report = await import_sessions(config, files, "100000000000001")
    text = "\n".join(report.problems)
    assert "ai_whatsapp_responses.json: not valid JSON" in text
    assert "ai_whatsapp_lang.json: 1 malformed entry" in text
    assert "ai_whatsapp_handoff.json: expected a JSON object" in text
    got = await rows(config)
    # The good file still counts; nothing from a bad file was half-used.
    assert [(r["wa_id"], r["last_response_id"], r["language"]) for r in got] == [("393331234567", None, None)]


async def test_missing_threads_file_imports_nothing(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    write(files, "ai_whatsapp_lang.json", {"+393331234567": "it"})
    config = config_for(tmp_path / "data")
    report = await import_sessions(config, files, "100000000000001")
    assert "ai_whatsapp_threads.json: not found" in report.problems[0]
    assert not has_data(config.data_dir)


def test_command_line(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    write(files, "ai_whatsapp_threads.json", {"+393331234567": "session_1"})
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "import-frappe-sessions", str(files), "--phone-number-id", "42",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env_for(tmp_path / "data"),
    )
    assert result.returncode == 0, result.stderr
    assert "imported 1 new conversation," in result.stdout
    assert [r["wa_id"] for r in query(tmp_path / "data", "SELECT wa_id FROM conversations")] == ["393331234567"]
