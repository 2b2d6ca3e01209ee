"""Shared bits: secrets the fakes and the server agree on, process probes, percentiles, child processes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

APP_SECRET = "bench-app-secret"
VERIFY_TOKEN = "bench-verify-token"
WA_TOKEN = "wa-test-token"  # what FakeGraph expects by default
PHONE_NUMBER_ID = "100000000000001"
WEBHOOK_PATH = "/webhooks/whatsapp"
# BOT_SECRET_KEY for servers that share a database: a Fernet key (32 bytes, urlsafe base64).
SECRET_KEY = base64.urlsafe_b64encode(b"bench: one key for all processes").decode()
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, every thread included (from /proc/PID/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # Fields after the command name start at field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for an empty list."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, from /proc/stat; steal included)."""
    parts = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


@dataclass(slots=True)
class CpuMeter:
    """CPU used by some processes between start() and stop(), as a share of one core.

    `machine` is what the whole machine used meanwhile; the caller subtracts its own processes
    (including the load generator, which reports itself) to see what anything else took.
    """

    pids: dict[str, int]
    _start: dict[str, float] | None = None
    _t0: float = 0.0
    _machine0: float = 0.0

    def start(self) -> None:
        """Take the first reading."""
        self._t0 = time.monotonic()
        self._machine0 = machine_busy_seconds()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        """Cores used by each process since start() (1.0 = one core fully busy), and by the machine."""
        assert self._start is not None
        wall = max(1e-9, time.monotonic() - self._t0)
        out: dict[str, float] = {}
        for name, pid in self.pids.items():
            try:
                out[name] = round((cpu_seconds(pid) - self._start[name]) / wall, 3)
            except (FileNotFoundError, ProcessLookupError):
                out[name] = float("nan")
        out["machine"] = round((machine_busy_seconds() - self._machine0) / wall, 3)
        return out


class Child:
    """A child process that prints one JSON line when ready, then serves until terminated."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any]) -> None:
        self.proc = proc
        self.info = info

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> Child:
        """Run `python -m <args>` and wait for its first stdout line (JSON)."""
        proc = await asyncio.create_subprocess_exec(
            PYTHON, "-m", *args, cwd=str(ROOT), env=env, stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            proc.kill()
            raise RuntimeError(f"{args[0]} did not start within {timeout}s") from None
        if not line:
            await proc.wait()
            raise RuntimeError(f"{args[0]} exited with {proc.returncode} before it was ready")
        return cls(proc, json.loads(line))

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if needed; returns the exit code."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


async def run_json(*args: str, stdin: bytes | None = None, timeout: float = 900.0) -> Any:
    """Run `python -m <args>` to completion and parse its stdout as JSON (stderr passes through)."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", *args, cwd=str(ROOT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed with exit code {proc.returncode}")
    return json.loads(out)
