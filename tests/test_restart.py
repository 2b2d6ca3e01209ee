"""run.py as a real process: SIGKILL mid-turn, restart, and the message is answered exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import orjson

from tests.backend import env_for, on_sqlite
from tests.conftest import APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN, WA_TOKEN
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import sign, text_message
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(fake_openai: FakeOpenAI, fake_graph: FakeGraph) -> dict[str, str]:
    """The environment run.py gets: fakes for OpenAI and Meta."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "OPENAI_", "WHATSAPP_"))}
    env.update({
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_openai.base_url,
        "WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "WHATSAPP_API_BASE": fake_graph.base_url,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "BOT_BURST_WINDOW_MS": "0",
        "BOT_RETRY_BASE_SECONDS": "0.05",
        "BOT_RETRY_BUDGET_SECONDS": "0",
        "BOT_ADMIN_PASSWORD": "restart-test-password",
    })
    return env


async def start_server(port: int, data_dir: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start run.py and wait until /healthz answers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--port", str(port), "--data-dir", str(data_dir),
        env=env_for(data_dir, env), cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if proc.returncode is not None:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"run.py exited early: {err.decode()[-2000:]}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    # Our own process, not another test's server that took the port first.
                    if resp.status == 200 and (await resp.json()).get("pid") == proc.pid:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("run.py did not start")


async def post(port: int, payload: dict[str, object]) -> int:
    """Deliver a signed webhook to the process."""
    body = orjson.dumps(payload)
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{port}/webhooks/whatsapp", data=body,
        headers={"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"},
    ) as resp:
        return resp.status


async def test_sigkill_mid_turn_then_restart_answers_exactly_once(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    env = server_env(fake_openai, fake_graph)
    port = free_port()
    data_dir = tmp_path / "data"
    fake_openai.latency = 30.0  # the model is "thinking" when the process dies
    proc = await start_server(port, data_dir, env)
    try:
        assert await post(port, text_message("wamid.KILL1", "393330000000", "ciao, ci siete?")) == 200
        await fake_openai.wait_for_requests(1, timeout=15)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert fake_graph.texts() == []

    fake_openai.latency = 0.0
    proc = await start_server(port, data_dir, env)
    try:
        await fake_graph.wait_for_sent(1, timeout=20)
        # Meta re-delivers the same message after the crash: still no second reply.
        assert await post(port, text_message("wamid.KILL1", "393330000000", "ciao, ci siete?")) == 200
        assert await post(port, text_message("wamid.KILL2", "393330000000", "e domani?")) == 200
        await fake_graph.wait_for_sent(2, timeout=20)
        assert fake_graph.texts() == ["Echo: ciao, ci siete?", "Echo: e domani?"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (data_dir.stat().st_mode & 0o777) == 0o700
    if on_sqlite():
        assert ((data_dir / "bot.db").stat().st_mode & 0o777) == 0o600
