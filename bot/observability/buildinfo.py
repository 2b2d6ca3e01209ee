"""Which code is running: version, build id or git commit, and when it started."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import bot
from bot.configuration.config import Config

SOURCE_ROOT = Path(bot.__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """Read once at start-up and shown on /ai-diagnostics."""

    version: str
    commit: str
    commit_source: str  # "BOT_BUILD_ID", "BUILD_ID file", "git" or "unknown"
    started_at: float


async def _git_commit(root: Path) -> str | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", "rev-parse", "HEAD", cwd=root,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None  # no git on this machine
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    commit = out.decode(errors="replace").strip()
    return commit if proc.returncode == 0 and commit else None


async def collect_build_info(config: Config, *, root: Path = SOURCE_ROOT, started_at: float | None = None) -> BuildInfo:
    """BOT_BUILD_ID, else a BUILD_ID file next to run.py, else `git rev-parse HEAD`."""
    started = time.time() if started_at is None else started_at
    if config.build_id:
        return BuildInfo(bot.__version__, config.build_id, "BOT_BUILD_ID", started)
    build_file = root / "BUILD_ID"
    if build_file.is_file():
        text = build_file.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return BuildInfo(bot.__version__, text[:100], "BUILD_ID file", started)
    commit = await _git_commit(root)
    if commit:
        return BuildInfo(bot.__version__, commit, "git", started)
    return BuildInfo(bot.__version__, "unknown", "unknown", started)
