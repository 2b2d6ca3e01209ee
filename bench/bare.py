"""The yardstick: a bare aiohttp app on uvloop whose webhook route reads the body and answers 200.

Run as `python -m bench.bare`; prints {"port": P} when listening. It is served exactly like run.py
serves the bot (AppRunner, no access log, uvloop), so the ratio to it is the cost of the webhook path.
"""

from __future__ import annotations

import asyncio
import json
import signal

from aiohttp import web

from bench.common import WEBHOOK_PATH


async def receive(request: web.Request) -> web.Response:
    """Read the body (as the real handler must before verifying it) and acknowledge."""
    await request.read()
    return web.Response(text="ok")


async def main() -> None:
    """Serve until SIGTERM."""
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, receive)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"port": int(runner.addresses[0][1])}), flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
