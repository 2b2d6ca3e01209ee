"""What every scenario shares: the server under test (in-process or `run.py`), a Meta that redelivers,
the ledger of what the server acknowledged, and the count of lost and duplicate replies.

The count is black-box: the fake model echoes each customer message on its own line ("Echo: a\\nb"),
so the fake Graph's record of what reached customers says how often each message was answered. The
database only explains the gaps (a reply marked `unknown`, a turn failed with the fallback text, a
send Meta refused for good).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.app import build_app
from bot.persistence import Repositories
from bot.persistence.postgres import PostgresDatabase
from bot.persistence.sqlite import SQLiteDatabase
from bot.texts import TEXTS
from bot.web.keys import REPOS
from tests import backend
from tests.conftest import API_TOKEN, APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN, WA_TOKEN, make_config
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import merge_entries, sign, text_message
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK = "/webhooks/whatsapp"
ECHO = "Echo: "
SERVER_TEXTS = frozenset(t for by_language in TEXTS.values() for t in by_language.values())  # fallback etc.
DELIVERED = ("sent", "delivered", "read")

INBOX_SQL = "SELECT id, wamid, customer_id, status, last_error FROM inbox ORDER BY id"
OUTBOX_SQL = (
    "SELECT id, customer_id, author, text, status, error_code, error_reason, reply_to_inbox_id, attempts "
    "FROM outbox ORDER BY id"
)
# Work still to do: customer messages without a turn, replies not yet (or still being) sent.
UNSETTLED_SQL = (
    "SELECT (SELECT COUNT(*) FROM inbox WHERE status = 'pending') "
    "+ (SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending'))"
)


# -- the ledger: what was delivered and acknowledged --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Message:
    """One customer message, with the exact bytes Meta (re)delivers."""

    wamid: str
    customer: str
    text: str
    body: bytes

    @property
    def wamids(self) -> tuple[str, ...]:
        """The messages this delivery carries."""
        return (self.wamid,)


@dataclass(frozen=True, slots=True)
class Batch:
    """One POST carrying several messages."""

    wamids: tuple[str, ...]
    body: bytes


def customers(count: int, prefix: str = "39347") -> list[str]:
    """Distinct customer numbers (E.164 digits)."""
    return [f"{prefix}{i:07d}" for i in range(count)]


class Ledger:
    """Every message a scenario created, and which of them the server acknowledged with a 200."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.messages: dict[str, Message] = {}
        self.acked: set[str] = set()
        self.posts = 0
        self.refusals: Counter[int] = Counter()  # non-200 answers by status; 0 = no answer at all
        self._count = 0

    def new(self, customer: str, *, padding: int = 0) -> Message:
        """A new text message from `customer` with a text unique in this run (no newline, no digits run)."""
        self._count += 1
        n = self._count
        text = f"{self.tag} question {n} of {customer[-3:].translate(str.maketrans('0123456789', 'abcdefghij'))}"
        text += " and more" * (padding // 9)
        wamid = f"wamid.{self.tag}.{n}"
        body = orjson.dumps(text_message(wamid, customer, text))
        msg = Message(wamid=wamid, customer=customer, text=text, body=body)
        self.messages[wamid] = msg
        return msg

    def batch(self, messages: list[Message]) -> Batch:
        """Several messages in one POST (Meta batches entries), signed as one body."""
        payloads = [orjson.loads(m.body) for m in messages]
        return Batch(tuple(m.wamid for m in messages), orjson.dumps(merge_entries(*payloads)))

    def unacked(self) -> list[Message]:
        """Messages Meta would still redeliver."""
        return [m for w, m in self.messages.items() if w not in self.acked]

    def acked_messages(self) -> list[Message]:
        """Messages the server acknowledged: from then on, it owns them."""
        return [m for w, m in self.messages.items() if w in self.acked]


class Meta:
    """Meta's side of the webhook: signed POSTs of the exact bytes, redelivery of what got no 200."""

    def __init__(self, http: aiohttp.ClientSession, url: str | Callable[[], str], ledger: Ledger, *,
                 timeout: float = 20.0) -> None:
        self.http = http
        self.url = url
        self.ledger = ledger
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def post(self, item: Message | Batch) -> int:
        """One delivery; 0 when no answer came (connection refused or cut). A 200 acknowledges it."""
        self.ledger.posts += 1
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(item.body, APP_SECRET)}
        try:
            url = self.url() if callable(self.url) else self.url  # a RunPy's port may change at a restart
            async with self.http.post(url, data=item.body, headers=headers, timeout=self.timeout) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        if status == 200:
            self.ledger.acked.update(item.wamids)
        else:
            self.ledger.refusals[status] += 1
        return status

    async def deliver(self, messages: Iterable[Message | Batch], *, concurrency: int = 4, gap: float = 0.0) -> None:
        """Deliver each once, in order, with up to `concurrency` POSTs in flight."""
        slots = asyncio.Semaphore(concurrency)

        async def one(msg: Message | Batch) -> None:
            async with slots:
                await self.post(msg)
                if gap:
                    await asyncio.sleep(gap)

        await asyncio.gather(*(one(m) for m in messages))

    async def deliver_until_acked(self, messages: Iterable[Message], *, within: float = 60.0,
                                  concurrency: int = 4) -> bool:
        """Redeliver with backoff until each message got its 200 (as Meta does); False if time ran out."""
        remaining = [m for m in messages if m.wamid not in self.ledger.acked]
        deadline = time.monotonic() + within
        delay = 0.1
        while remaining:
            await self.deliver(remaining, concurrency=concurrency)
            remaining = [m for m in remaining if m.wamid not in self.ledger.acked]
            if not remaining:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
        return True


# -- counting -------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    """What happened to every acknowledged message."""

    messages: int = 0
    answered: int = 0  # exactly one reply reached the customer
    lost: int = 0  # never answered, not failed with the fallback, not refused by Meta
    duplicates: int = 0  # answered more than once, or one reply text sent more often than queued
    gaps: int = 0  # at-most-once gaps: the reply is marked `unknown` (a crash mid-send), never resent
    gaps_delivered: int = 0  # ... of which Meta had in fact accepted the send
    fallbacks: int = 0  # the turn failed: marked failed, and the fixed "a person will answer" text was sent
    refused: int = 0  # Meta refused the reply for good (e.g. 131047): failed with the reason, not retried
    ignored: int = 0  # no reply by rule (auto-reply off, paused...)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        """Keep the first few problems for the report."""
        if len(self.problems) < 8:
            self.problems.append(text)


def _lines(reply: str) -> list[str]:
    # A long reply is split into parts at line ends; only the first part carries the "Echo: " prefix.
    return reply.removeprefix(ECHO).split("\n")


def _recipient(send: dict[str, Any]) -> str:
    return str(send.get("to") or send.get("recipient"))


def analyse(acked: list[Message], inbox: list[dict[str, Any]], outbox: list[dict[str, Any]],
            sent: list[dict[str, Any]]) -> Outcome:
    """Classify every acknowledged message from the fake Graph's sends and the final database rows."""
    out = Outcome(messages=len(acked))
    reached: Counter[tuple[str, str]] = Counter()  # (customer, message text) -> replies that reached them
    other_sends: Counter[tuple[str, str]] = Counter()  # (customer, body) of non-echo texts (fallbacks...)
    for send in sent:
        if send.get("type") != "text":
            continue
        to, body = _recipient(send), send["text"]["body"]
        if body in SERVER_TEXTS:
            other_sends[(to, body)] += 1
        else:
            for line in _lines(body):
                reached[(to, line)] += 1
    covering: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    other_rows: Counter[tuple[str, str]] = Counter()
    fallback_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in outbox:
        if row["author"] == "operator":
            continue
        if row["text"] not in SERVER_TEXTS:
            for line in _lines(row["text"]):
                covering[(row["customer_id"], line)].append(row)
        else:
            if row["status"] in (*DELIVERED, "unknown"):
                other_rows[(row["customer_id"], row["text"])] += 1
            if row["author"] == "system":
                fallback_rows[row["customer_id"]].append(row)
    inbox_by_wamid = {row["wamid"]: row for row in inbox}
    for msg in acked:
        key = (msg.customer, msg.text)
        times = reached[key]
        rows = covering.get(key, [])
        stored = inbox_by_wamid.get(msg.wamid)
        if times > 1:
            out.duplicates += 1
            out.problem(f"{msg.wamid} answered {times} times")
        elif any(r["status"] == "unknown" for r in rows):
            out.gaps += 1
            out.gaps_delivered += times
        elif times == 1:
            out.answered += 1
        elif stored is not None and stored["status"] == "failed" and any(
            r["reply_to_inbox_id"] is not None and r["reply_to_inbox_id"] >= stored["id"]
            and r["status"] in (*DELIVERED, "unknown") for r in fallback_rows[msg.customer]
        ):
            out.fallbacks += 1
        elif rows and all(r["status"] == "failed" and r["error_reason"] for r in rows):
            out.refused += 1
        elif stored is not None and stored["status"] == "ignored":
            out.ignored += 1
        else:
            out.lost += 1
            where = "not in the inbox" if stored is None else f"inbox {stored['status']} ({stored['last_error']})"
            out.problem(f"{msg.wamid} lost: {where}, replies {[r['status'] for r in rows]}")
    for key, count in other_sends.items():
        extra = count - other_rows[key]
        if extra > 0:
            out.duplicates += extra
            out.problem(f"{key[1][:40]!r} sent {count} times to one customer, queued {other_rows[key]} times")
    return out


# -- the server under test, in this process --------------------------------------------------------------------
@dataclass(slots=True)
class InProcess:
    """The real app served on loopback inside this event loop."""

    app: web.Application
    server: TestServer

    @property
    def repos(self) -> Repositories:
        """The app's repositories."""
        return self.app[REPOS]

    def url(self, path: str = WEBHOOK) -> str:
        """An absolute URL on the server."""
        return str(self.server.make_url(path))

    async def unsettled(self) -> int:
        """Pending customer messages plus replies not yet sent."""
        return int(await self.repos.db.fetchval(UNSETTLED_SQL) or 0)

    async def rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The final inbox and outbox rows."""
        inbox = [dict(r) for r in await self.repos.db.fetch(INBOX_SQL)]
        outbox = [dict(r) for r in await self.repos.db.fetch(OUTBOX_SQL)]
        return inbox, outbox


@asynccontextmanager
async def in_process(workdir: Path, oai: FakeOpenAI, graph: FakeGraph, **overrides: Any) -> AsyncIterator[InProcess]:
    """Build the app with the test configuration (plus overrides) and serve it until the block ends."""
    app = build_app(make_config(workdir, oai, graph, **overrides))
    server = TestServer(app)
    await server.start_server()
    try:
        yield InProcess(app, server)
    finally:
        await server.close()


async def wait_settled(unsettled: Callable[[], Awaitable[int]], *, within: float, quiet: float = 0.3) -> bool:
    """Wait until no work is left (twice in a row, `quiet` seconds apart); False when time ran out."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await unsettled() == 0:
            await asyncio.sleep(quiet)
            if await unsettled() == 0:
                return True
        await asyncio.sleep(0.05)
    return False


# -- the server under test as a real process ----------------------------------------------------------------------
def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(oai: FakeOpenAI, graph: FakeGraph, **extra: str) -> dict[str, str]:
    """run.py's environment: the fakes, fast retries, known secrets; `extra` overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "OPENAI_", "WHATSAPP_"))}
    env.update({
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": oai.base_url,
        "WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "WHATSAPP_API_BASE": graph.base_url,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "BOT_BURST_WINDOW_MS": "0",
        "BOT_RETRY_BASE_SECONDS": "0.05",
        "BOT_RETRY_BUDGET_SECONDS": "0",
        "BOT_RETRY_MAX_SECONDS": "0.5",
        "BOT_ADMIN_PASSWORD": "reliability-admin-password",
        "BOT_API_TOKEN": API_TOKEN,
    })
    env.update(extra)
    return env


class RunPy:
    """`python run.py` as a child process on a fixed port and data dir; its stdout and stderr go to a log."""

    def __init__(self, *, data_dir: Path, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.env = backend.env_for(data_dir, env)  # + BOT_DATABASE_URL on the PostgreSQL half
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    def url(self, path: str = WEBHOOK) -> str:
        """An absolute URL on the server."""
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def db_path(self) -> Path:
        """The server's database file."""
        return self.data_dir / "bot.db"

    async def start(self, *, within: float = 30.0) -> None:
        """Start run.py and wait until /healthz answers, from this very process.

        The port was free when it was chosen, but with tests in parallel another test's server may take
        it first: a 200 from that one would send this test's webhooks to the wrong server. So the
        answer must carry our pid, and a port taken meanwhile is given up for another.
        """
        assert self.proc is None or self.proc.returncode is not None, "already running"
        for _ in range(5):
            if await self._start_once(within):
                return
            self.port = free_port()
        raise AssertionError("run.py could not get a port of its own")

    async def _start_once(self, within: float) -> bool:
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "run.py"), "--port", str(self.port), "--data-dir", str(self.data_dir),
            env=self.env, cwd=str(ROOT), stdout=self._log, stderr=self._log,
        )
        self.starts += 1
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    if "address already in use" in self.log_tail().lower():
                        self._close_log()
                        return False
                    raise AssertionError(f"run.py exited early ({self.proc.returncode}): {self.log_tail()}")
                with suppress(aiohttp.ClientError):
                    async with http.get(self.url("/healthz")) as resp:
                        if resp.status == 200:
                            if (await resp.json()).get("pid") == self.proc.pid:
                                return True
                            await self.kill()  # someone else's server on our port
                            return False
                await asyncio.sleep(0.03)
        await self.kill()
        raise AssertionError(f"run.py did not start within {within} s: {self.log_tail()}")

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no checkpoint, mid-whatever it was doing."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self._close_log()

    async def stop(self, *, within: float = 20.0) -> int:
        """SIGTERM and wait for the graceful stop; returns the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), within)
            except TimeoutError:
                await self.kill()
                raise AssertionError("run.py did not stop on SIGTERM") from None
        self._close_log()
        return int(self.proc.returncode or 0)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        with suppress(FileNotFoundError):
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        return ""

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Read the server's database directly (WAL lets us read while it runs; or its PostgreSQL schema)."""
        return backend.query(self.data_dir, sql)

    async def unsettled(self) -> int:
        """Pending customer messages plus replies not yet sent."""
        rows = await asyncio.to_thread(self.query, f"{UNSETTLED_SQL} AS n")
        return int(rows[0]["n"])

    async def rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The final inbox and outbox rows."""
        return await asyncio.to_thread(self.query, INBOX_SQL), await asyncio.to_thread(self.query, OUTBOX_SQL)


# -- results ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class ScenarioResult:
    """One row of the summary table."""

    name: str
    outcome: Outcome
    seconds: float
    passed: bool
    note: str = ""
    known_limit: str | None = None  # set when a failure is a documented limit, not a regression

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or KNOWN LIMIT when the failure is the documented one."""
        if self.passed:
            return "PASS"
        return "KNOWN LIMIT" if self.known_limit else "FAIL"

    def explain(self) -> str:
        """A readable account for an assertion message."""
        o = self.outcome
        return (f"{self.name}: {o.messages} messages, answered {o.answered}, lost {o.lost}, duplicates "
                f"{o.duplicates}, gaps {o.gaps}, fallbacks {o.fallbacks}, refused {o.refused}; {self.note}; "
                f"problems: {o.problems}")


def clean(outcome: Outcome, *, allow_gaps: bool = False) -> bool:
    """The target: nothing lost, nothing twice (at-most-once gaps only where the scenario allows them)."""
    return outcome.lost == 0 and outcome.duplicates == 0 and (allow_gaps or outcome.gaps == 0)


# -- precise storage faults ------------------------------------------------------------------------------------
class StatementFaults:
    """Makes chosen statements of the app's own database fail, as a full disk would, and nothing else.

    SQLite: the trace callback names each statement of the writer's connection as it starts; the
    progress handler then interrupts it, which surfaces as `sqlite3.OperationalError` (rolling back the
    transaction), exactly the path of SQLITE_FULL or a lock past busy_timeout. Both callbacks run on
    the writer's thread.

    PostgreSQL: a statement-level trigger on every table compares `current_query()` (the statement the
    app sent) with the rules and raises SQLSTATE 53100, disk_full, the server's own error for a full
    disk. A rule counts its tries with a sequence, because sequences are the one thing a rolled-back
    transaction does not undo.
    """

    def __init__(self) -> None:
        self._rules: list[list[Any]] = []  # [statement prefix, failures left]
        self._armed = False
        self._sqlite_failed: list[str] = []
        self._pg_url: str | None = None

    @property
    def failed(self) -> list[str]:
        """The statements (prefixes, on PostgreSQL) made to fail so far."""
        if self._pg_url is None:
            return self._sqlite_failed
        schemas = backend.postgres()
        assert schemas is not None
        rows = schemas.query(self._pg_url,
                             "SELECT prefix, times, fault_tries(id) AS tries FROM fault_rules ORDER BY id")
        return [r["prefix"] for r in rows for _ in range(min(r["times"], r["tries"]))]

    def fail(self, prefix: str, times: int = 1) -> None:
        """Fail the next `times` statements that start with `prefix` (case-insensitive)."""
        if self._pg_url is None:
            self._rules.append([prefix.lower(), times])
            return
        schemas = backend.postgres()
        assert schemas is not None
        row = schemas.query(self._pg_url, "INSERT INTO fault_rules (prefix, times) VALUES ($1, $2) RETURNING id",
                            prefix.lower(), times)[0]
        schemas.query(self._pg_url, f"CREATE SEQUENCE fault_rule_{int(row['id'])}")

    def clear(self) -> None:
        """No more failures from now on."""
        if self._pg_url is None:
            self._rules.clear()
            return
        schemas = backend.postgres()
        assert schemas is not None
        schemas.query(self._pg_url, "UPDATE fault_rules SET times = 0")

    def _trace(self, sql: str) -> None:
        text = sql.lstrip().lower()
        if text.startswith("--"):
            return  # a trigger of the statement that is running (full-text indexes): part of it, not the next one
        self._armed = False
        for rule in self._rules:
            if rule[1] > 0 and text.startswith(rule[0]):
                rule[1] -= 1
                self._armed = True
                self._sqlite_failed.append(sql[:80])
                return

    def _progress(self) -> int:
        return 1 if self._armed else 0

    async def install(self, repos: Repositories) -> None:
        """Hook into the app's database."""
        if isinstance(repos.db, SQLiteDatabase):
            await repos.db.instrument(self._trace, self._progress)
            return
        assert isinstance(repos.db, PostgresDatabase)
        tables = [r[0] for r in await repos.db.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'")]
        await repos.db.execute(_PG_FAULTS_SQL + "".join(
            f"CREATE TRIGGER fault BEFORE INSERT OR UPDATE OR DELETE ON {t} FOR EACH STATEMENT "
            "EXECUTE FUNCTION fault_check();\n" for t in tables))
        self._pg_url = repos.db.url


_PG_FAULTS_SQL = """
CREATE TABLE fault_rules (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, prefix TEXT NOT NULL,
                          times BIGINT NOT NULL);
CREATE FUNCTION fault_tries(rule BIGINT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE tries BIGINT; called BOOLEAN;
BEGIN
    EXECUTE format('SELECT last_value, is_called FROM fault_rule_%s', rule) INTO tries, called;
    RETURN CASE WHEN called THEN tries ELSE 0 END;
END $$;
CREATE FUNCTION fault_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r RECORD;
BEGIN
    FOR r IN SELECT id, prefix, times FROM fault_rules ORDER BY id LOOP
        -- Nested: PostgreSQL does not promise to evaluate AND from left to right.
        IF r.times > 0 AND starts_with(lower(ltrim(current_query())), r.prefix) THEN
            IF nextval(format('fault_rule_%s', r.id)::regclass) <= r.times THEN
                RAISE EXCEPTION 'injected fault: %', r.prefix USING ERRCODE = 'disk_full';
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
"""
