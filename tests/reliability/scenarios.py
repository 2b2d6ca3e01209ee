"""The fault-injection scenarios. Each takes a scale and a scratch directory and returns summary rows.

Scale 1 is the pytest default (seconds per scenario); scale 4 and up is the standalone run: at least
20 SIGKILL trials, and the model outage lasts a real minute.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bot.configuration.config import Config
from bot.persistence.database import marks
from bot.persistence.sqlite import SQLiteDatabase
from tests.fakes.graph_server import RE_ENGAGEMENT_DETAILS, FakeGraph, graph_error
from tests.fakes.openai_server import Fail, FakeOpenAI, Hang, Step
from tests.reliability.harness import (
    Batch,
    InProcess,
    Ledger,
    Message,
    Meta,
    Outcome,
    RunPy,
    ScenarioResult,
    StatementFaults,
    analyse,
    clean,
    customers,
    in_process,
    server_env,
    wait_settled,
)

Scenario = Callable[[int, Path], Awaitable[list[ScenarioResult]]]


def kill_trials(scale: int) -> int:
    """SIGKILL trials: 5 at scale 1 (pytest), 5 × scale from there (20 at scale 4)."""
    return max(5, 5 * scale)


def outage_seconds(scale: int) -> float:
    """How long the model is down: compressed under pytest, the real minute from scale 4."""
    return 60.0 if scale >= 4 else 2.0


async def _settle_and_count(srv: InProcess, graph: FakeGraph, ledger: Ledger, within: float
                            ) -> tuple[Outcome, bool, list[dict[str, Any]]]:
    settled = await wait_settled(srv.unsettled, within=within)
    inbox, outbox = await srv.rows()
    return analyse(ledger.acked_messages(), inbox, outbox, graph.sent), settled, inbox


# -- 1. duplicate and reordered deliveries -----------------------------------------------------------------------
async def duplicate_storm(scale: int, workdir: Path) -> list[ScenarioResult]:
    """Many customers; 30% of messages delivered again (9% a third time), some in batches; all shuffled."""
    started = time.monotonic()
    rng = random.Random(100 + scale)
    async with FakeOpenAI(seed=1) as oai, FakeGraph(seed=1) as graph, aiohttp.ClientSession() as http:
        oai.latency = (0.0, 0.02)
        async with in_process(workdir, oai, graph, burst_window_ms=30) as srv:
            ledger = Ledger("storm")
            originals = [ledger.new(c) for c in customers(20 * scale) for _ in range(5)]
            deliveries: list[Message | Batch] = list(originals)
            for msg in originals:
                if rng.random() < 0.3:
                    deliveries.append(msg)
                    if rng.random() < 0.3:
                        deliveries.append(msg)
            for _ in range(len(originals) // 10):  # Meta also batches entries, repeats included
                deliveries.append(ledger.batch(rng.sample(originals, rng.randint(2, 4))))
            rng.shuffle(deliveries)
            meta = Meta(http, srv.url(), ledger)
            await meta.deliver(deliveries, concurrency=8)
            await meta.deliver_until_acked(originals)
            outcome, settled, inbox = await _settle_and_count(srv, graph, ledger, 30.0 + 10 * scale)
    repeats = len(deliveries) - len(originals)
    stored_once = len(inbox) == len(originals) == len({r["wamid"] for r in inbox})
    note = (f"{len(deliveries)} POSTs ({repeats} repeats or batches), shuffled, {20 * scale} customers; "
            f"{len(inbox)} inbox rows")
    if not settled:
        note += "; did not settle"
    return [ScenarioResult("duplicate + reordered deliveries", outcome, time.monotonic() - started,
                           clean(outcome) and settled and stored_once, note)]


# -- 2. SIGKILL at random moments ----------------------------------------------------------------------------------
async def sigkill_restarts(scale: int, workdir: Path) -> list[ScenarioResult]:
    """run.py killed with SIGKILL mid-burst and mid-turn, restarted each time; the fakes stay up."""
    started = time.monotonic()
    trials = kill_trials(scale)
    rng = random.Random(200 + scale)
    landed: Counter[str] = Counter()
    async with FakeOpenAI(seed=2) as oai, FakeGraph(seed=2) as graph, aiohttp.ClientSession() as http:
        oai.latency = (0.0, 0.3)
        graph.latency = (0.0, 0.08)  # the kill can land while Meta holds a send it has not answered yet
        server = RunPy(data_dir=workdir / "data", env=server_env(oai, graph), log_path=workdir / "server.log")
        ledger = Ledger("kill")
        meta = Meta(http, server.url, ledger, timeout=10)
        people = customers(6, prefix="39348")
        try:
            for _ in range(trials):
                await server.start()
                redeliver = ledger.unacked()  # Meta got no 200 for these: it sends them again
                new = [ledger.new(rng.choice(people)) for _ in range(10)]
                acked = ledger.acked_messages()
                again = rng.sample(acked, min(3, len(acked)))
                burst = asyncio.create_task(meta.deliver([*redeliver, *new, *again], concurrency=3,
                                                         gap=rng.uniform(0.02, 0.12)))
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                landed["webhook burst"] += not burst.done()
                landed["model call"] += oai.in_flight > 0
                await server.kill()
                await burst
            await server.start()
            acknowledged_all = await meta.deliver_until_acked(ledger.unacked(), within=30)
            settled = await wait_settled(server.unsettled, within=60)
            await server.stop()
        finally:
            await server.kill()
        inbox, outbox = await server.rows()
    outcome = analyse(ledger.acked_messages(), inbox, outbox, graph.sent)
    note = (f"{trials} SIGKILLs ({landed['webhook burst']} mid-burst, {landed['model call']} mid-model-call), "
            f"{ledger.posts} POSTs; at-most-once gaps: {outcome.gaps} replies marked `unknown` "
            f"({outcome.gaps_delivered} had reached Meta, {outcome.gaps - outcome.gaps_delivered} had not), "
            "never resent")
    if not (settled and acknowledged_all):
        note += "; did not settle"
    passed = clean(outcome, allow_gaps=True) and settled and acknowledged_all
    return [ScenarioResult(f"SIGKILL × {trials} + restart", outcome, time.monotonic() - started, passed, note)]


# -- 3. the model failing 20% of calls ------------------------------------------------------------------------------
async def model_failures(scale: int, workdir: Path) -> list[ScenarioResult]:
    """About 20% of model calls fail: 429 and 500 (fail_rate 15%) or a hang past the 0.3 s timeout (6%)."""
    started = time.monotonic()
    rng = random.Random(300 + scale)
    hangs = 0

    def responder(body: dict[str, Any]) -> Step | None:
        nonlocal hangs
        if rng.random() < 0.06:
            hangs += 1
            return Hang(1.0)
        return None

    async with FakeOpenAI(seed=3) as oai, FakeGraph(seed=3) as graph, aiohttp.ClientSession() as http:
        oai.fail_rate = 0.15
        oai.responder = responder
        oai.latency = (0.0, 0.02)
        async with in_process(workdir, oai, graph, openai_timeout_seconds=0.3, retry_base_seconds=0.05,
                              retry_max_seconds=0.4) as srv:
            ledger = Ledger("flaky")
            people = customers(10, prefix="39349")
            msgs = [ledger.new(rng.choice(people)) for _ in range(80 * scale)]
            meta = Meta(http, srv.url(), ledger)
            await meta.deliver(msgs, concurrency=4, gap=0.02)
            outcome, settled, _ = await _settle_and_count(srv, graph, ledger, 30.0 + 10 * scale)
    calls = len(oai.http_statuses)
    failed = sum(1 for s in oai.http_statuses if s != 200) + hangs
    note = (f"{failed}/{calls} model calls failed ({failed / max(1, calls):.0%}: "
            f"{sum(1 for s in oai.http_statuses if s == 429)}×429, {sum(1 for s in oai.http_statuses if s >= 500)}×5xx,"
            f" {hangs} timeouts); {outcome.fallbacks} turns gave up after 5 tries (fallback sent)")
    if not settled:
        note += "; did not settle"
    return [ScenarioResult("model fails 20% (429/500/timeout)", outcome, time.monotonic() - started,
                           clean(outcome) and settled, note)]


# -- 4. the model down for a while, then back ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutagePolicy:
    """A retry policy to ride out an outage with."""

    label: str
    retry_base_seconds: float
    retry_max_seconds: float
    max_attempts: int
    retry_budget_seconds: float = 0.0
    known_limit: str | None = None

    def ride_out(self) -> float:
        """The shortest time the retries of one model call span (jitter at its low end, 0.75).

        Mirrors bot.backoff.Backoff: tries go on until there were `max_attempts` of them AND the
        time budget is spent.
        """
        waited, tries = 0.0, 1
        while tries < self.max_attempts or waited < self.retry_budget_seconds:
            waited += 0.75 * min(self.retry_max_seconds, self.retry_base_seconds * 2 ** (tries - 1))
            tries += 1
        return waited


def outage_policies(scale: int) -> list[OutagePolicy]:
    """Compressed time under pytest; from scale 4 the defaults and the BOT_MAX_ATTEMPTS=7 workaround."""
    if scale < 4:
        return [OutagePolicy("base 0.3 s, 5 tries", 0.3, 3.0, 5)]
    defaults = Config()
    return [
        OutagePolicy("defaults: base 2 s, 5 tries and 120 s", defaults.retry_base_seconds,
                     defaults.retry_max_seconds, defaults.max_attempts, defaults.retry_budget_seconds),
    ]


async def model_outage(scale: int, workdir: Path) -> list[ScenarioResult]:
    """The model answers 500/503 to everything for a while (a minute from scale 4), then comes back."""
    policies = outage_policies(scale)
    return list(await asyncio.gather(*(
        _outage(scale, workdir / f"policy{i}", policy, seed=400 + i) for i, policy in enumerate(policies)
    )))


async def _outage(scale: int, workdir: Path, policy: OutagePolicy, *, seed: int) -> ScenarioResult:
    started = time.monotonic()
    seconds = outage_seconds(scale)
    rng = random.Random(seed)
    down_until: float | None = None
    calls_while_down = 0
    sent_while_down: int | None = None

    def responder(body: dict[str, Any]) -> Step | None:
        nonlocal calls_while_down, down_until, sent_while_down
        now = time.monotonic()
        if down_until is None:
            # The outage starts with the first model call, not on the clock: on a busy machine (tests in
            # parallel) the first turns may take longer to reach the model than the outage lasts.
            down_until = now + seconds
        if now >= down_until and sent_while_down is None:
            sent_while_down = len(graph.sent)  # the first call the model answers again: the outage is over
        if now < down_until:
            calls_while_down += 1
            return Fail(rng.choice((500, 503)), code="server_error", message="The model is down (injected).")
        return None

    async with FakeOpenAI(seed=seed) as oai, FakeGraph(seed=seed) as graph, aiohttp.ClientSession() as http:
        oai.responder = responder
        async with in_process(workdir, oai, graph, retry_base_seconds=policy.retry_base_seconds,
                              retry_max_seconds=policy.retry_max_seconds, max_attempts=policy.max_attempts,
                              retry_budget_seconds=policy.retry_budget_seconds) as srv:
            ledger = Ledger("outage")
            people = customers(10, prefix="39340")
            msgs = [ledger.new(rng.choice(people)) for _ in range(20 * scale)]
            meta = Meta(http, srv.url(), ledger)
            half = len(msgs) // 2
            await meta.deliver(msgs[:half], concurrency=4)
            # The rest trickles in during the first half of the outage.
            await meta.deliver(msgs[half:], concurrency=1, gap=seconds / 2 / max(1, len(msgs) - half))
            outcome, settled, _ = await _settle_and_count(srv, graph, ledger, seconds * 2 + 30.0)
    waited = outcome.answered  # answered by the model after the outage
    note = (f"down {seconds:g} s, {calls_while_down} model calls refused meanwhile, {sent_while_down} texts went "
            f"out during it (fallbacks only); {waited} answered by the model after it, {outcome.fallbacks} gave up "
            f"with the fallback text; one call's retries span ≥ {policy.ride_out():.1f} s")
    if not settled:
        note += "; did not settle"
    passed = (clean(outcome) and settled and outcome.fallbacks == 0 and sent_while_down == 0
              and calls_while_down > 0)
    return ScenarioResult(f"model down {seconds:g} s ({policy.label})", outcome, time.monotonic() - started, passed,
                          note, known_limit=policy.known_limit)


# -- 5. Graph API errors -----------------------------------------------------------------------------------------
class FlakyGraph(FakeGraph):
    """Fails text sends before accepting them: transient errors at most twice per reply, final ones for some."""

    def __init__(self, *, seed: int, transient_rate: float, final_for: set[str]) -> None:
        super().__init__(seed=seed)
        self.transient_rate = transient_rate
        self.final_for = final_for
        self.hang_seconds = 2.0
        self.failed_so_far: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()

    async def _send(self, record: dict[str, Any]) -> web.Response:
        text = record.get("text")
        body = str(text.get("body")) if isinstance(text, dict) else ""
        if record.get("type") == "text" and body:
            to = str(record.get("to") or record.get("recipient"))
            if to in self.final_for:
                self.attempts.append({**record, "outcome": "error"})
                self.injected["131047"] += 1
                return graph_error(400, 131047, "Re-engagement message", details=RE_ENGAGEMENT_DETAILS)
            if self.failed_so_far[body] < 2 and self.rng.random() < self.transient_rate:
                self.failed_so_far[body] += 1
                self.attempts.append({**record, "outcome": "error"})
                kind = self.rng.choice(("130429", "500", "hang"))
                self.injected[kind] += 1
                if kind == "130429":
                    return graph_error(429, 130429, "Rate limit hit", details="Cloud API message throughput reached.")
                if kind == "500":
                    return graph_error(500, 131000, "Something went wrong", details="Something went wrong (fake).")
                await self.sleep_unless_closed(self.hang_seconds)  # past the server's 0.8 s timeout
                return graph_error(503, 2, "Service temporarily unavailable", details="Hung by the fake.")
        return await super()._send(record)


async def graph_errors(scale: int, workdir: Path) -> list[ScenarioResult]:
    """Transient Graph errors (130429, 500, hangs) are retried until sent once; 131047 fails once, with reason."""
    started = time.monotonic()
    rng = random.Random(500 + scale)
    people = customers(10, prefix="39341")
    closed = set(people[:2])  # these customers wrote more than 24 h ago: Meta refuses every reply
    async with FakeOpenAI(seed=5) as oai, FlakyGraph(seed=5, transient_rate=0.35, final_for=closed) as graph, \
            aiohttp.ClientSession() as http:
        # 0.8 s, not less: an honest 131047 must never miss the timeout on a busy machine (it would be
        # retried, and the scenario counts one attempt per refused reply).
        async with in_process(workdir, oai, graph, graph_timeout_seconds=0.8, retry_base_seconds=0.05,
                              retry_max_seconds=0.3) as srv:
            ledger = Ledger("graph")
            msgs = [ledger.new(rng.choice(people)) for _ in range(40 * scale)]
            meta = Meta(http, srv.url(), ledger)
            await meta.deliver(msgs, concurrency=4, gap=0.01)
            outcome, settled, _ = await _settle_and_count(srv, graph, ledger, 30.0 + 10 * scale)
            refused_rows = [dict(r) for r in await srv.repos.db.fetch(
                "SELECT customer_id, status, error_code, error_reason, attempts FROM outbox "
                f"WHERE customer_id IN ({marks(len(closed))})", *closed)]
    attempts_closed = sum(1 for a in graph.attempts if a.get("type") == "text" and a.get("to") in closed)
    final_ok = (
        bool(refused_rows)
        and all(r["status"] == "failed" and r["error_code"] == 131047 and r["error_reason"] for r in refused_rows)
        and attempts_closed == len(refused_rows)  # one attempt per reply: never retried
    )
    note = (f"injected {dict(graph.injected)}; 131047: {len(refused_rows)} replies failed with the reason after "
            f"{attempts_closed} attempts ({'never retried' if final_ok else 'WRONG'})")
    if not settled:
        note += "; did not settle"
    return [ScenarioResult("Graph 130429/500/hang + 131047", outcome, time.monotonic() - started,
                           clean(outcome) and settled and final_ok, note)]


class LateAcceptGraph(FakeGraph):
    """Accepts every `every`-th text send, then answers only after the server has stopped waiting."""

    def __init__(self, *, seed: int, every: int) -> None:
        super().__init__(seed=seed)
        self.every = every
        self.texts_accepted = 0
        self.late = 0

    async def _send(self, record: dict[str, Any]) -> web.Response:
        response = await super()._send(record)
        if response.status == 200 and record.get("type") == "text":
            self.texts_accepted += 1
            if self.texts_accepted % self.every == 1:
                self.late += 1
                await self.sleep_unless_closed(1.0)  # accepted and recorded; the answer comes too late
        return response


LATE_ACCEPT_LIMIT = (
    "a send that times out after Meta accepted it is retried and reaches the customer twice: the Graph API has no "
    "idempotency key, and the client treats every timeout as 'not sent'"
)


async def graph_late_accept(scale: int, workdir: Path) -> list[ScenarioResult]:
    """Meta accepts a send but its answer is lost (timeout): the server cannot know, and retries."""
    started = time.monotonic()
    rng = random.Random(600 + scale)
    async with FakeOpenAI(seed=6) as oai, LateAcceptGraph(seed=6, every=4) as graph, \
            aiohttp.ClientSession() as http:
        async with in_process(workdir, oai, graph, graph_timeout_seconds=0.3, retry_base_seconds=0.05,
                              retry_max_seconds=0.3) as srv:
            ledger = Ledger("late")
            msgs = [ledger.new(rng.choice(customers(5, prefix="39342"))) for _ in range(10 * scale)]
            await Meta(http, srv.url(), ledger).deliver(msgs, concurrency=2)
            outcome, settled, _ = await _settle_and_count(srv, graph, ledger, 30.0)
    note = (f"{graph.late} sends accepted by Meta but answered after the 0.3 s timeout; "
            f"{len(graph.texts())} texts reached customers for {len(msgs)} messages")
    # Marking such a send `unknown` (an at-most-once gap) would be the fix, so gaps pass here.
    return [ScenarioResult("Graph accepts, answer times out", outcome, time.monotonic() - started,
                           clean(outcome, allow_gaps=True) and settled, note, known_limit=LATE_ACCEPT_LIMIT)]


# -- 6. the database full or locked -------------------------------------------------------------------------------
class ExclusiveLock:
    """Another process's write lock on the database (a backup tool, a stray sqlite3 shell)."""

    def __init__(self, db_path: Path) -> None:
        self._conn = sqlite3.connect(db_path, timeout=10, isolation_level=None, check_same_thread=False)

    async def __aenter__(self) -> ExclusiveLock:
        await asyncio.to_thread(self._conn.execute, "BEGIN EXCLUSIVE")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await asyncio.to_thread(self._conn.execute, "ROLLBACK")
        finally:
            self._conn.close()


class TablesLocked:
    """PostgreSQL: another session holds EXCLUSIVE locks on the tables that take writes (reads go on)."""

    TABLES = "inbox, outbox, conversations, contacts, commands, errors, orphan_statuses"

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> TablesLocked:
        self._conn = await asyncpg.connect(self._url)
        await self._conn.execute(f"BEGIN; LOCK TABLE {self.TABLES} IN EXCLUSIVE MODE")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None
        try:
            await self._conn.execute("ROLLBACK")
        finally:
            await self._conn.close()


async def _full_disk_phase(srv: InProcess, http: aiohttp.ClientSession, oai: FakeOpenAI, scale: int,
                           ledger: Ledger) -> tuple[bool, str]:
    """Turns are with the model, and more messages come in, while no page can be added (SQLITE_FULL)."""
    rng = random.Random(700)
    people = customers(8, prefix="39343")
    # Long messages: each needs new pages, so a full database refuses it (a short one may fit a free slot).
    first = [ledger.new(rng.choice(people), padding=1500) for _ in range(10 * scale)]
    then = [ledger.new(rng.choice(people), padding=1500) for _ in range(10 * scale)]
    meta = Meta(http, srv.url(), ledger)
    oai.latency = (0.2, 0.6)
    await meta.deliver(first, concurrency=4)
    await asyncio.sleep(0.1)  # their turns are waiting for the model now, and will commit into a full disk
    db = srv.repos.db
    faults = StatementFaults()
    if isinstance(db, SQLiteDatabase):
        pages = int(await db.fetchval("PRAGMA page_count") or 0)
        await db.pragma(f"max_page_count = {pages}")
        what = "SQLITE_FULL for 1.5 s"
    else:
        # PostgreSQL: every write statement fails with the server's own disk_full (53100) meanwhile.
        await faults.install(srv.repos)
        for verb in ("insert", "update", "delete"):
            faults.fail(verb, times=1_000_000)
        what = "disk_full (53100) for 1.5 s"
    try:
        await meta.deliver(then, concurrency=2, gap=1.0 / len(then))
        await asyncio.sleep(0.5)
    finally:
        if isinstance(db, SQLiteDatabase):
            await db.pragma("max_page_count = 1073741823")
        else:
            await asyncio.to_thread(faults.clear)
    oai.latency = 0.0
    return await meta.deliver_until_acked([*first, *then], within=30), what


async def _locked_phase(srv: InProcess, http: aiohttp.ClientSession, oai: FakeOpenAI, scale: int,
                        ledger: Ledger) -> tuple[bool, str]:
    """Turns are with the model when another process takes the write lock for longer than busy_timeout (5 s).

    On PostgreSQL: another session locks the tables for longer than the writer's lock_timeout (5 s)."""
    rng = random.Random(701)
    people = customers(8, prefix="39344")
    first = [ledger.new(rng.choice(people)) for _ in range(10 * scale)]
    then = [ledger.new(rng.choice(people)) for _ in range(10 * scale)]
    meta = Meta(http, srv.url(), ledger)
    oai.latency = (0.5, 1.0)
    await meta.deliver(first, concurrency=4)
    await asyncio.sleep(0.15)  # their turns are waiting for the model now
    db = srv.repos.db
    lock = ExclusiveLock(db.path) if isinstance(db, SQLiteDatabase) else TablesLocked(db.url)  # type: ignore[attr-defined]
    async with lock:
        # These wait the 5 s busy_timeout: the first gets a 503, the rest get through once the lock goes.
        burst = asyncio.create_task(meta.deliver(then, concurrency=4, gap=0.05))
        await asyncio.sleep(5.5)
    await burst
    oai.latency = 0.0
    return await meta.deliver_until_acked([*first, *then], within=30), "write lock held 5.5 s"


async def database_trouble(scale: int, workdir: Path) -> list[ScenarioResult]:
    """The database full for a second, then locked by another process past busy_timeout, during bursts."""
    results = []
    async with FakeOpenAI(seed=7) as oai, FakeGraph(seed=7) as graph, aiohttp.ClientSession() as http:
        async with in_process(workdir, oai, graph) as srv:
            names = {"sqlite": ("database full (SQLITE_FULL)", "database locked > busy_timeout"),
                     "postgres": ("database full (disk_full)", "tables locked > lock_timeout")}[srv.repos.db.dialect]
            for name, phase in zip(names, ("full", "lock"), strict=True):
                started = time.monotonic()
                ledger = Ledger(f"db{phase}")
                if phase == "full":
                    acknowledged_all, what = await _full_disk_phase(srv, http, oai, scale, ledger)
                else:
                    acknowledged_all, what = await _locked_phase(srv, http, oai, scale, ledger)
                outcome, settled, _ = await _settle_and_count(srv, graph, ledger, 40.0)
                refused = ledger.refusals.get(503, 0)
                others = {k: v for k, v in ledger.refusals.items() if k != 503}
                note = f"{what}: {refused} webhook POSTs answered 503 and were redelivered" + (
                    f", other answers {others}" if others else "")
                if not (settled and acknowledged_all):
                    note += "; did not settle"
                # A full disk refuses every new row, so webhooks must have been refused; a lock blocks one write
                # at a time (for busy_timeout), which may be a turn's rather than a webhook's.
                passed = clean(outcome) and settled and acknowledged_all and (refused > 0 or phase == "lock")
                results.append(ScenarioResult(name, outcome, time.monotonic() - started, passed, note))
    return results


SCENARIOS: dict[str, Scenario] = {
    "storm": duplicate_storm,
    "sigkill": sigkill_restarts,
    "model_failures": model_failures,
    "model_outage": model_outage,
    "graph_errors": graph_errors,
    "graph_late_accept": graph_late_accept,
    "database": database_trouble,
}
