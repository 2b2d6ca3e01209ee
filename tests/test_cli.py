"""run.py as a person meets it: mistyped commands, add-user without a terminal, start-up warnings."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bot.cli import main
from bot.commands import COMMANDS, add_user, migrate
from bot.configuration.config import Config
from bot.persistence.migrations import load_migrations
from tests.test_restart import ROOT, free_port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any of the server's settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "OPENAI_", "WHATSAPP_"))}
    return {**env, **extra}


async def run_py(*args: str) -> tuple[int, str]:
    """Run run.py in its own session, so with no terminal to open, and stdin at its end (as under cron or CI)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), *args, cwd=str(ROOT), env=clean_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.parametrize(("typed", "suggestion"), [("migrat", "migrate"), ("add-usr", "add-user"),
                                                    ("import-product", "import-products"), ("frobnicate", None)])
def test_a_mistyped_command_names_the_valid_ones(
    typed: str, suggestion: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([typed]) == 2
    err = capsys.readouterr().err
    assert f"unknown command '{typed}'" in err
    assert (f"did you mean '{suggestion}'?" in err) if suggestion else ("did you mean" not in err)
    assert "Commands: " + ", ".join(sorted(COMMANDS)) in err
    assert "Traceback" not in err


def test_a_mistyped_command_after_data_dir_is_caught_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(tmp_path), "migrat"]) == 2
    assert "did you mean 'migrate'?" in capsys.readouterr().err
    assert not (tmp_path / "bot.db").exists()  # nothing ran


async def test_migrate_brings_a_new_database_up_to_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = Config(data_dir=tmp_path / "data")
    assert await migrate.run(config, []) == 0
    out = capsys.readouterr().out
    latest = load_migrations("sqlite")[-1][0]
    assert f"schema version {latest}" in out and "0001_core" in out
    assert config.db_path.exists()


async def test_add_user_without_a_terminal_explains_how_to_pass_the_password(tmp_path: Path) -> None:
    code, err = await run_py("--data-dir", str(tmp_path), "add-user", "maria")
    assert code == 2, err
    assert "Traceback" not in err and "EOFError" not in err
    assert "no terminal to type the password in" in err
    assert "--password-stdin" in err


async def test_add_user_with_an_empty_stdin_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert await add_user.run(Config(data_dir=tmp_path / "data"), ["maria", "--password-stdin"]) == 2
    assert "--password-stdin found no password" in capsys.readouterr().err


async def test_start_up_warns_about_missing_key_and_app_secret(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--port", str(free_port()), "--data-dir", str(tmp_path),
        cwd=str(ROOT), env=clean_env(BOT_ADMIN_PASSWORD="startup-test-password"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[dict[str, Any]] = []
    try:
        # Off a terminal the logs are JSON lines; the warnings come before "listening".
        while not lines or lines[-1].get("event") != "listening":
            raw = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert raw, f"run.py exited early: {lines}"
            if raw.startswith(b"{"):
                lines.append(orjson.loads(raw))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    missing = {line["setting"]: line for line in lines if line.get("event") == "setting_missing"}
    assert set(missing) == {"OPENAI_API_KEY", "WHATSAPP_APP_SECRET", "WHATSAPP_ACCESS_TOKEN"}
    assert all(line["level"] == "warning" for line in missing.values())
    assert "cannot answer customers" in missing["OPENAI_API_KEY"]["effect"]
    assert "Set OPENAI_API_KEY" in missing["OPENAI_API_KEY"]["fix"]
    assert "refused (403)" in missing["WHATSAPP_APP_SECRET"]["effect"]
    assert "App settings → Basic" in missing["WHATSAPP_APP_SECRET"]["fix"]
