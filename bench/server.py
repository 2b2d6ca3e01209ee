"""The real server as a child process: `python run.py --port P --data-dir D` against the fakes."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

from bench.common import APP_SECRET, PHONE_NUMBER_ID, PYTHON, ROOT, VERIFY_TOKEN, WA_TOKEN, free_port, rss_kib


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The knobs a phase turns (everything else is the server's default)."""

    burst_ms: int = 1000
    idle_seconds: float = 300.0
    send_rate: float = 80.0
    extra: dict[str, str] = field(default_factory=dict)


def server_env(fakes: dict[str, str], settings: ServerSettings) -> dict[str, str]:
    """The environment run.py gets: fakes for OpenAI and Meta, nothing inherited from BOT_/OPENAI_/WHATSAPP_."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "OPENAI_", "WHATSAPP_"))}
    env.update({
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": fakes["openai"],
        "WHATSAPP_API_BASE": fakes["graph"],
        "WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "BOT_ADMIN_PASSWORD": "bench-admin-password",
        "BOT_BURST_WINDOW_MS": str(settings.burst_ms),
        "BOT_ACTOR_IDLE_SECONDS": str(settings.idle_seconds),
        "BOT_SEND_RATE": str(settings.send_rate),
        **settings.extra,
    })
    return env


class Server:
    """One run.py process on a fresh data directory; its log goes to a file next to it."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: IO[bytes], log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self._log = log
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    def rss_kib(self) -> int:
        """The server's resident set size (VmRSS) in KiB."""
        return rss_kib(self.proc.pid)

    @classmethod
    async def start(cls, workdir: Path, fakes: dict[str, str], settings: ServerSettings) -> Server:
        """Start run.py and wait until /healthz answers 200."""
        port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "server.log"
        log = log_path.open("wb")
        proc = await asyncio.create_subprocess_exec(
            PYTHON, str(ROOT / "run.py"), "--port", str(port), "--data-dir", str(workdir / "data"),
            env=server_env(fakes, settings), cwd=str(ROOT), stdout=log, stderr=log,
        )
        server = cls(proc, port, log, log_path)
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if proc.returncode is not None:
                    raise RuntimeError(f"run.py exited with {proc.returncode}; see {log_path}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            return server
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        await server.stop()
        raise RuntimeError(f"run.py did not answer /healthz within 30 s; see {log_path}")

    async def kill(self) -> int | None:
        """SIGKILL: for phases whose shutdown would only replay a parked backlog (the inbox keeps it)."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._log.close()
        return self.proc.returncode

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful stop), then SIGKILL after `timeout`; returns the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._log.close()
        return self.proc.returncode
