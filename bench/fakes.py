"""The fakes in their own process: FakeOpenAI, FakeGraph and a small control API for the orchestrator.

Run as `python -m bench.fakes`; prints one JSON line (the three base URLs) when listening, then serves
until SIGTERM. Control routes (on their own port, so they never queue behind fake traffic):

    GET  /stats             counters: replies, model calls, read marks, max model concurrency seen
    POST /latency           {"seconds": L}: the fake model's latency
    GET  /replies?since=N   [[t_monotonic, to, body], ...] for the text sends from index N
    POST /reset             forget everything recorded so far (keeps memory flat between phases)
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.graph_server import FakeGraph
from tests.fakes.openai_server import FakeOpenAI


class StampedGraph(FakeGraph):
    """FakeGraph that also keeps when each text send arrived (CLOCK_MONOTONIC, comparable across processes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, str, str]] = []

    async def _send(self, record: dict[str, Any]) -> web.Response:
        arrived = time.monotonic()
        response = await super()._send(record)
        if response.status == 200 and record.get("type") == "text":
            self.stamps.append((arrived, str(record.get("to") or record.get("recipient")), record["text"]["body"]))
        return response


def _reset(oai: FakeOpenAI, graph: StampedGraph) -> None:
    for fake in (oai, graph):
        fake.requests.clear()
    oai.issued.clear()
    oai.stored.clear()
    oai.http_statuses.clear()
    oai.max_concurrent_seen = 0
    graph.sent.clear()
    graph.attempts.clear()
    graph.read_marks.clear()
    graph.stamps.clear()


def control_app(oai: FakeOpenAI, graph: StampedGraph) -> web.Application:
    """The orchestrator's view into the fakes."""
    routes = web.RouteTableDef()

    @routes.get("/stats")
    async def stats(request: web.Request) -> web.Response:
        return web.json_response({
            "replies": len(graph.stamps),
            "sends": len(graph.sent),
            "read_marks": len(graph.read_marks),
            "model_calls": len(oai.issued),
            "model_statuses_not_200": sum(1 for s in oai.http_statuses if s != 200),
            "model_max_concurrency": oai.max_concurrent_seen,
            "model_in_flight": oai.in_flight,
        })

    @routes.post("/latency")
    async def latency(request: web.Request) -> web.Response:
        oai.latency = float((await request.json())["seconds"])
        return web.json_response({"latency": oai.latency})

    @routes.get("/replies")
    async def replies(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.Response(body=orjson.dumps(graph.stamps[since:]), content_type="application/json")

    @routes.post("/reset")
    async def reset(request: web.Request) -> web.Response:
        _reset(oai, graph)
        return web.json_response({"ok": True})

    app = web.Application()
    app.add_routes(routes)
    return app


async def main() -> None:
    """Serve the fakes until SIGTERM."""
    oai = FakeOpenAI()
    graph = StampedGraph()
    await oai.start()
    await graph.start()
    runner = web.AppRunner(control_app(oai, graph), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control_port = int(runner.addresses[0][1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({
        "openai": oai.base_url, "graph": graph.base_url, "control": f"http://127.0.0.1:{control_port}",
    }), flush=True)
    await stop.wait()
    await runner.cleanup()
    await graph.close()
    await oai.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
    sys.exit(0)
