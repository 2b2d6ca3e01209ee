"""The benchmark's phases. Each one starts what it needs, measures, stops it, and returns a dict."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import SECRET_KEY, Child, CpuMeter, percentile, run_json
from bench.loadgen import customer_wa_id
from bench.postgres import DEFAULT_URL, BackendCpu, Schema
from bench.server import Server, ServerSettings

# The burst window that keeps turns from starting while the ack path is measured: actors are activated
# (that cost is in the number) but their turns begin only after the burst cap (10 s in conversation.py).
PARKED_BURST_MS = 60_000
PARKED_WINDOW = 7.0  # seconds of load that fit before the first parked turns start
TOKEN = re.compile(r"\[(\w+)\]")  # the e2e phase's c12m3, the load generator's <prefix><i>


@dataclass(frozen=True, slots=True)
class Options:
    """What the command line chose."""

    latency_ms: int
    burst_ms: int
    connections: int
    duration: float
    warmup: float
    customers: int
    conversations: int
    messages_per_conversation: int
    conversation_rate: float
    actors: int
    workdir: Path
    burst0: bool
    rounds: int
    open_fractions: tuple[float, ...]
    flood_rate: float = 1000.0
    flood_count: int = 2000
    sustained_customers: int = 4000
    sustained_messages: int = 10
    quiet_rate: float = 100.0
    quiet_seconds: float = 10.0
    pg_url: str = DEFAULT_URL
    keep: bool = False


class Fakes:
    """The fakes' child process and its control API."""

    def __init__(self, child: Child, http: aiohttp.ClientSession) -> None:
        self.child = child
        self.http = http
        self.urls: dict[str, str] = child.info

    @classmethod
    async def start(cls, http: aiohttp.ClientSession) -> Fakes:
        """Start `python -m bench.fakes`."""
        return cls(await Child.start("bench.fakes"), http)

    async def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        async with self.http.request(method, self.urls["control"] + path, json=payload) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def reset(self, latency_ms: float) -> None:
        """Forget recorded traffic and set the model latency."""
        await self._call("POST", "/reset")
        await self._call("POST", "/latency", {"seconds": latency_ms / 1000})

    async def stats(self) -> dict[str, int]:
        """Counters."""
        result: dict[str, int] = await self._call("GET", "/stats")
        return result

    async def replies(self, since: int) -> list[list[Any]]:
        """Text sends from index `since`: [t_monotonic, to, body]."""
        result: list[list[Any]] = await self._call("GET", f"/replies?since={since}")
        return result

    async def wait_replies(self, n: int, timeout: float) -> tuple[bool, float]:
        """Poll until at least n replies arrived; returns (reached, when)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await self.stats())["replies"] >= n:
                return True, time.monotonic()
            await asyncio.sleep(0.2)
        return False, time.monotonic()

    async def stop(self) -> None:
        """Stop the process."""
        await self.child.stop()


async def loadgen(job: dict[str, Any], meter: CpuMeter | None = None) -> dict[str, Any]:
    """Run one load-generator job in its own process, metering the other processes meanwhile."""
    if meter is not None:
        meter.start()
    result: dict[str, Any] = await run_json("bench.loadgen", stdin=json.dumps(job).encode())
    if meter is not None:
        result["cores"] = with_other({**meter.stop(), "loadgen": result["loadgen_cores"]})
    return result


def with_other(cores: dict[str, float]) -> dict[str, float]:
    """Add `other`: what the machine used beyond the benchmark's own processes (someone else's load)."""
    ours = sum(v for k, v in cores.items() if k != "machine")
    return {**cores, "other": round(max(0.0, cores["machine"] - ours), 3)}


async def bare(opts: Options) -> dict[str, Any]:
    """Closed-loop load against the bare aiohttp app."""
    child = await Child.start("bench.bare")
    try:
        return await loadgen({
            "mode": "closed", "port": child.info["port"], "connections": opts.connections,
            "duration": opts.duration, "warmup": opts.warmup, "customers": opts.customers, "prefix": "bare",
        }, CpuMeter({"bare": child.pid, "bench": os.getpid()}))
    finally:
        await child.stop()


async def ingest(opts: Options, fakes: Fakes, *, parked: bool, rate: float | None = None) -> dict[str, Any]:
    """Webhook acks on a fresh server: closed-loop (rate None) or open-loop at `rate`.

    parked: turns are held back by a long burst window, so the number is the webhook path alone
    (verify, parse, inbox insert and commit, actor activation). Otherwise the whole pipeline runs
    at the configured burst window and model latency while the load goes on.
    """
    await fakes.reset(opts.latency_ms)
    name = f"ingest-{'parked' if parked else 'live'}-{'open' if rate else 'closed'}"
    settings = ServerSettings(burst_ms=PARKED_BURST_MS if parked else opts.burst_ms)
    server = await Server.start(opts.workdir / name, fakes.urls, settings)
    # Live: one message per customer, so that every burst window closes and turns really run meanwhile
    # (with 10,000 customers at this rate each would get a message before its window ended).
    job: dict[str, Any] = {"port": server.port, "customers": opts.customers if parked else 0, "prefix": name}
    if rate is None:
        duration = min(opts.duration, PARKED_WINDOW - opts.warmup) if parked else opts.duration
        job |= {"mode": "closed", "connections": opts.connections, "duration": duration, "warmup": opts.warmup}
    else:
        # The same 64 connections as the closed loop, like a sender with a fixed pool: a request due while
        # all are busy waits for one, and that wait is part of its latency. (Letting the pool grow makes
        # things worse, not better: at 512 connections the server acks about half as many per second.)
        job |= {"mode": "open", "rate": rate, "duration": min(opts.duration, PARKED_WINDOW),
                "connections": opts.connections, "max_connections": opts.connections}
    try:
        result = await loadgen(job, meter(server, fakes))
        result["server_rss_kib"] = server.rss_kib()
        if not parked:
            result["replies_by_end"] = (await fakes.stats())["replies"]
    finally:
        # A graceful stop would first run every parked or queued turn (up to the 10 s shutdown timeout):
        # nothing is measured then, so the process is killed; the inbox would replay the backlog.
        await server.kill()
    return result


def meter(server: Server, fakes: Fakes) -> CpuMeter:
    """CPU of the server, the fakes and this orchestrator."""
    return CpuMeter({"server": server.pid, "fakes": fakes.child.pid, "bench": os.getpid()})


def conversation_plan(opts: Options, gap: float, prefix: str) -> list[list[Any]]:
    """[offset, customer, text, wamid] for every message: conversations start evenly, messages `gap` apart."""
    sends: list[list[Any]] = []
    for c in range(opts.conversations):
        start = c / opts.conversation_rate
        for m in range(opts.messages_per_conversation):
            token = f"c{c}m{m}"
            text = f"Hello, do you still have the blue jacket in size {40 + m}? [{token}]"
            sends.append([round(start + m * gap, 4), c, text, f"wamid.{prefix}.{token}"])
    return sends


async def e2e(opts: Options, fakes: Fakes, burst_ms: int) -> dict[str, Any]:
    """Conversations of several messages each; every message must be answered exactly once."""
    await fakes.reset(opts.latency_ms)
    name = f"e2e-burst{burst_ms}"
    # A gap longer than the burst window (and than a turn) makes every message its own turn.
    gap = 1.5 * max(burst_ms, opts.latency_ms) / 1000
    server = await Server.start(opts.workdir / name, fakes.urls, ServerSettings(burst_ms=burst_ms))
    try:
        plan = conversation_plan(opts, gap, name)
        sent = await loadgen({"mode": "script", "port": server.port, "sends": plan, "max_connections": 256},
                             meter(server, fakes))
        expected = {str(s[2]).rsplit("[", 1)[1].rstrip("]"): int(s[1]) for s in plan}
        answered = await _collect_tokens(fakes, expected, timeout=60 + 2 * len(plan) / 80)
        stats = await fakes.stats()
        rss = server.rss_kib()
    finally:
        code = await server.stop(timeout=30)
    posted_at = {str(r[0]).rsplit(".", 1)[1]: float(r[1]) for r in sent["records"]}
    acks = Counter(int(r[3]) for r in sent["records"])
    counts = Counter(answered["tokens"])
    latencies = [answered["first_seen"][t] - posted_at[t] for t in expected if t in answered["first_seen"]]
    missing = [t for t in expected if counts[t] == 0]
    duplicated = [t for t in expected if counts[t] > 1]
    conversations_complete = len({expected[t] for t in expected} - {expected[t] for t in missing})
    return {
        "burst_ms": burst_ms,
        "latency_ms": opts.latency_ms,
        "gap_s": gap,
        "conversations": opts.conversations,
        "messages": len(plan),
        "acks": {str(k): v for k, v in acks.items()},
        "replies": answered["replies"],
        "answered": len(expected) - len(missing),
        "missing": len(missing),
        "duplicated": len(duplicated),
        "wrong_recipient": answered["wrong_recipient"],
        "conversations_complete": conversations_complete,
        "e2e_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "e2e_p90_ms": round(percentile(latencies, 90) * 1000, 1),
        "e2e_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "e2e_max_ms": round(max(latencies) * 1000, 1) if latencies else float("nan"),
        "ack_p50_ms": round(percentile([float(r[2]) for r in sent["records"]], 50) * 1000, 2),
        "ack_p99_ms": round(percentile([float(r[2]) for r in sent["records"]], 99) * 1000, 2),
        "model_calls": stats["model_calls"],
        "model_max_concurrency": stats["model_max_concurrency"],
        "cores": sent["cores"],
        "send_elapsed_s": sent["elapsed_s"],
        "server_rss_kib": rss,
        "server_exit_code": code,
    }


async def _collect_tokens(fakes: Fakes, expected: dict[str, int], timeout: float) -> dict[str, Any]:
    """Read replies until every expected token was answered (then a little longer, to catch late repeats)."""
    seen: list[str] = []
    first_seen: dict[str, float] = {}
    wrong = 0
    since = 0
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    while time.monotonic() < deadline:
        batch = await fakes.replies(since)
        since += len(batch)
        for arrived, to, body in batch:
            for token in TOKEN.findall(str(body)):
                seen.append(token)
                first_seen.setdefault(token, float(arrived))
                if token in expected and to != customer_wa_id(expected[token]):
                    wrong += 1
        if settle_until is None and len(first_seen.keys() & expected.keys()) == len(expected):
            settle_until = time.monotonic() + 2.0
        if settle_until is not None and time.monotonic() >= settle_until:
            break
        await asyncio.sleep(0.25)
    return {"tokens": seen, "first_seen": first_seen, "wrong_recipient": wrong, "replies": since}


async def memory(opts: Options, fakes: Fakes) -> dict[str, Any]:
    """RSS per idle live actor: one message from each of N customers, all answered, actors still live."""
    await fakes.reset(0)
    # Outbound is capped at BOT_SEND_RATE per business number (Meta's 80/s); lifted here so the phase
    # measures memory, not the rate limit. Idle actors must outlive the phase.
    settings = ServerSettings(burst_ms=0, idle_seconds=3600, send_rate=100_000)
    server = await Server.start(opts.workdir / "memory", fakes.urls, settings)
    warm = min(500, max(10, opts.actors // 40))
    try:
        rss_start = server.rss_kib()
        # Warm-up customers: first-use costs (SDK client, language profiles, caches) are not per actor.
        await loadgen({"mode": "closed", "port": server.port, "connections": 16, "count": warm, "customers": 0,
                       "prefix": "warm"})
        ok, _ = await fakes.wait_replies(warm, 120)
        await asyncio.sleep(1.0)
        rss_warm = server.rss_kib()
        await fakes.reset(0)
        started = time.monotonic()
        cpu = meter(server, fakes)
        cpu.start()
        # Customers warm..warm+N-1: new ones (customer index = request index offset by the warm-up).
        sent = await loadgen({"mode": "closed", "port": server.port, "connections": 32, "count": opts.actors,
                              "customers": 0, "prefix": "mem", "offset": warm})
        reached, done_at = await fakes.wait_replies(opts.actors, 120 + opts.actors / 50)
        cores = cpu.stop()
        await asyncio.sleep(1.0)
        rss_after = server.rss_kib()
        stats = await fakes.stats()
    finally:
        code = await server.stop(timeout=60)
    turns_s = stats["replies"] / max(1e-9, done_at - started)
    return {
        "actors": opts.actors,
        "warmup_customers": warm,
        "all_answered": bool(reached and ok),
        "acked": sent["ok"],
        "replies": stats["replies"],
        "rss_start_kib": rss_start,
        "rss_warm_kib": rss_warm,
        "rss_after_kib": rss_after,
        "rss_per_actor_bytes": round((rss_after - rss_warm) * 1024 / opts.actors, 1),
        "turns_per_s": round(turns_s, 1),
        "cores": with_other({**cores, "loadgen": sent["loadgen_cores"]}),
        "server_exit_code": code,
    }


async def actor_alone(n: int) -> dict[str, Any]:
    """The idle actor by itself (no database work), in its own process."""
    result: dict[str, Any] = await run_json("bench.actor_mem", str(n))
    return result


class WalSampler:
    """The largest size the SQLite WAL file reached while the sampler ran (polled every 0.2 s)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "bot.db-wal"
        self.max_bytes = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                self.max_bytes = max(self.max_bytes, self.path.stat().st_size)
            except FileNotFoundError:
                pass
            self.samples += 1
            await asyncio.sleep(0.2)

    def __enter__(self) -> WalSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def now_bytes(self) -> int:
        """The WAL file's size now."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


class Answers:
    """The tokens in the replies reaching the fake Graph: when each was first answered, and how often."""

    def __init__(self, fakes: Fakes) -> None:
        self._fakes = fakes
        self._since = 0
        self.first: dict[str, float] = {}
        self.counts: Counter[str] = Counter()

    async def _poll(self) -> None:
        batch = await self._fakes.replies(self._since)
        self._since += len(batch)
        for arrived, _to, body in batch:
            for token in TOKEN.findall(str(body)):
                self.counts[token] += 1
                self.first.setdefault(token, float(arrived))

    async def wait_all(self, expected: set[str], timeout: float) -> bool:
        """Poll until every expected token was answered once; False when `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        while True:
            await self._poll()
            if expected <= self.first.keys():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)

    async def settle(self, seconds: float) -> None:
        """Keep reading a little longer, to catch late duplicates."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            await self._poll()


async def _answered(fakes: Fakes, expected: set[str], timeout: float) -> tuple[dict[str, float], Counter[str]]:
    """First reply time per expected token, and how often each token was answered (duplicates count)."""
    answers = Answers(fakes)
    if await answers.wait_all(expected, timeout):
        await answers.settle(2.0)
    return answers.first, answers.counts


def _latency_row(values: list[float]) -> dict[str, float]:
    return {f"p{q}_ms": round(percentile(values, q) * 1000, 1) for q in (50, 90, 99)} | {
        "max_ms": round(max(values) * 1000, 1) if values else float("nan")}


async def open_arrivals(opts: Options, fakes: Fakes, *, name: str, rate: float, count: int, latency_ms: int,
                        timeout: float) -> dict[str, Any]:
    """New customers writing at a fixed rate (one message each) through the whole pipeline, burst window 0.

    Returns the acks' latency and each conversation's time to its reply (reply at the fake Graph −
    the moment its webhook was due), with every message checked to be answered exactly once.
    """
    await fakes.reset(latency_ms)
    settings = ServerSettings(burst_ms=0, send_rate=1000)
    server = await Server.start(opts.workdir / name, fakes.urls, settings)
    try:
        sent = await loadgen({"mode": "open", "port": server.port, "rate": rate, "duration": count / rate,
                              "customers": 0, "prefix": name, "connections": opts.connections,
                              "max_connections": 512, "records": True}, meter(server, fakes))
        expected = {f"{name}{i}" for i in range(count)}
        first, counts = await _answered(fakes, expected, timeout)
    finally:
        code = await server.stop(timeout=30)
    due = {f"{name}{i}": at for i, at in sent.pop("records")}
    reply = [first[t] - due[t] for t in expected if t in first and t in due]
    return {
        "rate": rate, "messages": count, "latency_ms": latency_ms,
        "ack": {k: sent[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "ok", "requests")},
        "reply": _latency_row(reply),
        "answered": len(first.keys() & expected), "duplicates": sum(1 for t in expected if counts[t] > 1),
        "cores": sent["cores"], "server_exit_code": code,
    }


# The sustained scenario's server settings on every backend: replies at once (burst 0), and a send
# rate well above what the drain reaches, so the drain measures the turns and not the rate limiter.
SUSTAINED = ServerSettings(burst_ms=0, send_rate=1000)


class PhaseCpu:
    """Cores used over one window: each server process, the fakes, this process, and on PostgreSQL the backends."""

    def __init__(self, servers: list[Server], fakes: Fakes, schema: Schema | None = None) -> None:
        names = ["server"] if len(servers) == 1 else [f"server{k + 1}" for k in range(len(servers))]
        pids = {name: server.pid for name, server in zip(names, servers, strict=True)}
        self._procs = CpuMeter({**pids, "fakes": fakes.child.pid, "bench": os.getpid()})
        self._backends = BackendCpu(schema, [s.pid for s in servers]) if schema is not None else None

    async def start(self) -> None:
        """Take the first readings."""
        self._procs.start()
        if self._backends is not None:
            await self._backends.start()

    async def stop(self, **more: float) -> dict[str, float]:
        """Cores per process since start(), `more` (e.g. the load generator's own figure), and `other`."""
        cores = self._procs.stop()
        if self._backends is not None:
            cores["postgres"] = await self._backends.stop()
        return with_other({**cores, **more})


async def _load_and_drain(opts: Options, fakes: Fakes, servers: list[Server], *, customers: int, per_customer: int,
                          schema: Schema | None = None) -> dict[str, Any]:
    """The closed loop over every server's port, then the drain until the last message is answered."""
    total = customers * per_customer
    ingest_cpu = PhaseCpu(servers, fakes, schema)
    await ingest_cpu.start()
    sent = await loadgen({"mode": "closed", "ports": [s.port for s in servers], "connections": opts.connections,
                          "count": total, "customers": customers, "prefix": "s"})
    ingest_cores = await ingest_cpu.stop(loadgen=sent["loadgen_cores"])
    ingest_end = float(sent["last_ack_monotonic"])
    expected = {f"s{i}" for i in range(total)}
    # A refused webhook was not stored (Meta would deliver it again; the load generator does not): its
    # message is not waited for, and the exactly-once check counts it as missing.
    acked = expected - {f"s{i}" for i in sent["refused"]}
    answered_at_end = (await fakes.stats())["replies"]
    answers = Answers(fakes)
    drain_cpu = PhaseCpu(servers, fakes, schema)
    await drain_cpu.start()
    # The drain's CPU is metered until the last message is answered, not through the settling after it.
    complete = await answers.wait_all(acked, 120 + total / 200)
    drain_cores = await drain_cpu.stop()
    if complete:
        await answers.settle(2.0)
    answered = answers.first.keys() & expected
    turns = (await fakes.stats())["model_calls"]  # messages per turn = answered / turns (bursts folded)
    last = max(answers.first.values()) if answers.first else ingest_end
    after_end = sum(1 for t in answered if answers.first[t] > ingest_end)
    drain_s = max(1e-9, last - ingest_end)
    return {
        "customers": customers, "messages": total, "ports": [s.port for s in servers],
        "ingest": {k: sent[k] for k in ("ok_per_s", "p50_ms", "p99_ms", "ok", "requests", "elapsed_s", "statuses",
                                        "connection_errors", "answers_by_port")},
        "acked": len(acked),
        "replies_during_ingest": answered_at_end,
        "drain": {"messages": after_end, "seconds": round(drain_s, 2),
                  "messages_per_s": round(after_end / drain_s, 1), "cores": drain_cores},
        "answered": len(answered), "model_calls": turns,
        "duplicates": sum(1 for t in expected if answers.counts[t] > 1),
        "cores": ingest_cores,
    }


async def _stop_all(servers: list[Server]) -> list[int | None]:
    """Graceful stops, all at once (each process's turns are done by now); the exit codes."""
    return list(await asyncio.gather(*(server.stop(timeout=60) for server in servers)))


async def sustained(opts: Options, fakes: Fakes, *, customers: int, per_customer: int) -> dict[str, Any]:
    """A closed loop of signed webhooks (customers × messages, interleaved), model 0 ms, the pipeline live, on SQLite.

    Reports ingest acks/s while turns share the core, then the drain (messages answered per second
    from the last ack until the last reply), exactly-once, and the largest WAL file seen.
    """
    await fakes.reset(0)
    name = "sustained"
    server = await Server.start(opts.workdir / name, fakes.urls, SUSTAINED)
    try:
        with WalSampler(opts.workdir / name / "data") as wal:
            result = await _load_and_drain(opts, fakes, [server], customers=customers, per_customer=per_customer)
            wal_end = wal.now_bytes()
    finally:
        codes = await _stop_all([server])
    return {"backend": "sqlite", "processes": 1, **result, "wal_max_mib": round(wal.max_bytes / 2**20, 1),
            "wal_end_mib": round(wal_end / 2**20, 1), "server_exit_codes": codes}


async def sustained_pg(opts: Options, fakes: Fakes, *, name: str, processes: int, customers: int,
                       per_customer: int) -> dict[str, Any]:
    """The sustained scenario on PostgreSQL: `processes` servers on one fresh schema, the load spread over their ports.

    The processes form a cluster (advisory locks per conversation, LISTEN/NOTIFY), so a message
    may be acknowledged by one process and answered by another. No WAL figure: the sampler reads SQLite's.
    """
    await fakes.reset(0)
    async with Schema.fresh(opts.pg_url, f"bench_{os.getpid()}_{name}", keep=opts.keep) as schema:
        # One key for all: each process must read what another encrypted.
        settings = replace(SUSTAINED, extra={"BOT_DATABASE_URL": schema.url, "BOT_SECRET_KEY": SECRET_KEY})
        servers: list[Server] = []
        try:
            # One at a time: the first applies the migrations, the next find the schema ready.
            for k in range(processes):
                servers.append(await Server.start(opts.workdir / name / f"p{k + 1}", fakes.urls, settings))
            result = await _load_and_drain(opts, fakes, servers, customers=customers, per_customer=per_customer,
                                           schema=schema)
        finally:
            codes = await _stop_all(servers)
    return {"backend": "postgres", "processes": processes, "schema": schema.name, **result,
            "wal_max_mib": None, "wal_end_mib": None, "server_exit_codes": codes}
