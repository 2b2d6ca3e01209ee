"""`python run.py` itself: slow clients are cut off, and a bad secret key is a configuration error."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import aiohttp

from tests.fakes.graph_server import FakeGraph
from tests.fakes.openai_server import FakeOpenAI
from tests.reliability.harness import ROOT, RunPy, server_env


async def _closed_within(port: int, seconds: float) -> float:
    """Open a connection that sends a request head a byte at a time and never ends it; return how long
    the server took to close it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"POST /webhooks/whatsapp HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    async def dribble() -> None:
        # The slow client: a header byte every 0.1 s (the sleep is the client's, not a wait on the server).
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)

    task = asyncio.create_task(dribble())
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(1024):  # the server's answer (if any), then end of stream
                pass
        return time.monotonic() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.close()


async def test_slow_request_heads_are_cut_off(tmp_path: Path, fake_openai: FakeOpenAI, fake_graph: FakeGraph) -> None:
    server = RunPy(data_dir=tmp_path / "data", env=server_env(fake_openai, fake_graph, BOT_HEADER_TIMEOUT_SECONDS="1"),
                   log_path=tmp_path / "server.log")
    await server.start()
    try:
        # Fifty at once, each still sending: every one is closed about a second after it opened.
        took = await asyncio.gather(*(_closed_within(server.port, 10) for _ in range(50)))
        assert max(took) < 4, took
        assert min(took) >= 0.9, took
        async with aiohttp.ClientSession() as http, http.get(server.url("/healthz")) as resp:
            assert resp.status == 200  # and the server still serves everyone else
    finally:
        await server.stop()


async def _run_py(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--port", "0", "--data-dir", str(tmp_path / "data"),
        env=env, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    return int(proc.returncode or 0), stderr.decode(errors="replace")


async def test_a_bad_secret_key_is_a_configuration_error_not_a_traceback(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    code, stderr = await _run_py(tmp_path, server_env(fake_openai, fake_graph, BOT_SECRET_KEY="too-short"))
    assert code == 2, stderr
    assert "configuration error: BOT_SECRET_KEY must be a Fernet key" in stderr
    assert "Traceback" not in stderr
