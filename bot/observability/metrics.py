"""Prometheus metrics, on a registry owned by the app (never the process-global default)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)


class Metrics:
    """Every metric the server exports; parts get the one instance through their constructors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_in = Counter("bot_messages_in", "Customer messages stored from webhooks", ["type"],
                                   registry=r)
        self.duplicates = Counter("bot_duplicate_deliveries", "Webhook messages Meta delivered again", registry=r)
        self.messages_out = Counter("bot_messages_out", "Messages accepted by the Graph API", ["author"], registry=r)
        self.send_failures = Counter("bot_send_failures", "Sends that failed for good, by Graph error code",
                                     ["code"], registry=r)
        self.turn_latency = Histogram("bot_turn_seconds", "Time from turn start to reply committed", ["outcome"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.model_latency = Histogram("bot_model_call_seconds", "Duration of one Responses API call",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.tool_calls = Counter("bot_tool_calls", "Tool calls by tool and outcome", ["tool", "outcome"],
                                  registry=r)
        self.errors = Counter("bot_errors", "Errors recorded, by type", ["type"], registry=r)
        self.model_tokens = Counter("bot_model_tokens", "Model tokens used, by model and kind (input, cached, "
                                    "output)", ["model", "kind"], registry=r)
        self.model_cost = Counter("bot_model_cost", "Model spend by model, in the price table's currency", ["model"],
                                  registry=r)
        self.spend = Gauge("bot_model_spend", "Model spend so far in the UTC day or month (all processes)",
                           ["period"], registry=r)
        self.live_actors = Gauge("bot_live_actors", "Conversation actors in memory", registry=r)
        self.inbox_pending = Gauge("bot_inbox_pending", "Customer messages waiting for a turn", registry=r)

    def error(self, type_: str) -> None:
        """Count one recorded error (the part before ':' keeps label cardinality low)."""
        self.errors.labels(type=type_.split(":", 1)[0]).inc()

    def bind_gauges(self, live: Callable[[], int]) -> None:
        """Read the live actor count at scrape time."""
        self.live_actors.set_function(lambda: float(live()))

    def bind_spend(self, today: Callable[[], float], month: Callable[[], float]) -> None:
        """Read today's and this month's spend at scrape time."""
        self.spend.labels(period="today").set_function(today)
        self.spend.labels(period="month").set_function(month)

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))


class _Tools(Protocol):
    def specs(self) -> list[dict[str, Any]]: ...

    async def call(self, name: str, arguments: str, context: Any) -> str: ...


class CountingTools:
    """Wraps the tool registry for the engine, counting calls by tool and outcome (ok or error)."""

    def __init__(self, tools: _Tools, metrics: Metrics) -> None:
        self._tools = tools
        self._metrics = metrics

    def specs(self) -> list[dict[str, Any]]:
        """The wrapped registry's tool definitions."""
        return self._tools.specs()

    async def call(self, name: str, arguments: str, context: Any) -> str:
        """Run the tool and count the outcome; every tool error comes back as {"error": ...}."""
        output = await self._tools.call(name, arguments, context)
        outcome = "ok"
        if output.startswith('{"error"'):
            try:
                outcome = "error" if "error" in orjson.loads(output) else "ok"
            except orjson.JSONDecodeError:
                outcome = "ok"
        known = name if name in {s.get("name") for s in self._tools.specs()} else "unknown"
        self._metrics.tool_calls.labels(tool=known, outcome=outcome).inc()
        return output
