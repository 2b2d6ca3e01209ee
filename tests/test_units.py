"""Unit-level checks of the pieces the pipeline is built from."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.actors.admission import Admission, Draining
from bot.actors.base import Actor, IdleClock
from bot.actors.guards import LOOP_FAST_REPLIES, LoopWatch
from bot.actors.registry import Registry
from bot.ai.engine import strip_citations
from bot.ai.instructions import render_instructions, with_context
from bot.ai.privacy import PHONE_MASK, make_redactor, mask_phone, redact_deep
from bot.configuration.config import Config, ConfigError
from bot.persistence.database import Database
from bot.whatsapp.client import TokenBucket, classify
from bot.whatsapp.events import PayloadError, parse_webhook
from bot.whatsapp.signature import expected_signature, signature_valid
from bot.whatsapp.text import split_text
from tests.fakes.meta import load_sample
from tests.helpers import wait_until

# Nothing here opens a database: the PostgreSQL half of the suite leaves these to the SQLite half.
pytestmark = pytest.mark.no_database


@pytest.mark.parametrize(
    "text",
    [
        "chiamami al +39 333 000 0000",
        "chiamami al 393330000000",
        "chiamami al 0039 333 0000000",
        "chiamami al 333-000-0000",
        "chiamami al (333) 000 0000",
        "chiamami al 333.000.0000",
        "chiamami al +39-333-0000000.",
    ],
)
def test_redactor_masks_every_common_format(text: str) -> None:
    redact = make_redactor(["393330000000"])
    out = redact(text)
    assert PHONE_MASK in out
    assert "0000" not in out


def test_redactor_leaves_other_numbers_alone() -> None:
    redact = make_redactor(["393330000000"])
    text = "Ordine 12345, totale 39,90 €, codice 333000, altro numero +39 347 123 4567"
    assert redact(text) == text


def test_redact_deep_and_mask_phone() -> None:
    redact = make_redactor(["+39 333 000 0000"])
    value = {"a": ["tel 393330000000", 5, {"b": "3330000000"}]}
    assert redact_deep(value, redact) == {"a": [f"tel {PHONE_MASK}", 5, {"b": PHONE_MASK}]}
    assert mask_phone("393334567") == "+39***4567"
    assert mask_phone("393330004567") == "+39******4567"


def test_signature_check() -> None:
    body = load_sample("text")
    good = expected_signature(body, "s3cret")
    assert signature_valid(body, good, "s3cret")
    assert not signature_valid(body + b" ", good, "s3cret")
    assert not signature_valid(body, good, "")
    assert not signature_valid(body, None, "s3cret")
    assert not signature_valid(body, good.removeprefix("sha256="), "s3cret")


def test_parser_reads_the_samples() -> None:
    import orjson

    batch = parse_webhook(orjson.loads(load_sample("batch_two_messages")))
    assert [m.text for m in batch.messages] == ["Buongiorno", "avete la taglia M?"]
    assert batch.messages[0].customer_id == "IT.1000000000000000001"
    assert batch.messages[0].wa_id == "393330000000"
    only = parse_webhook(orjson.loads(load_sample("text_bsuid_only"))).messages[0]
    assert (only.customer_id, only.wa_id, only.profile_name) == ("IT.1000000000000000003", None, "Username Tester")
    button = parse_webhook(orjson.loads(load_sample("interactive_button_reply"))).messages[0]
    assert button.text
    status = parse_webhook(orjson.loads(load_sample("status_failed_131047"))).statuses[0]
    assert status.error_code == 131047 and status.status == "failed"
    echo = parse_webhook(orjson.loads(load_sample("smb_echo_edit"))).echoes[0]
    assert echo.type == "edit" and echo.text and "corretto" in echo.text
    with pytest.raises(PayloadError):
        parse_webhook({"object": "whatsapp_business_account", "entry": {"x": 1}})


def test_split_text_prefers_sentence_ends() -> None:
    text = ("Prima frase. " * 400).strip()
    parts = split_text(text, limit=1000)
    assert all(len(p) <= 1000 for p in parts)
    assert all(p.endswith(".") for p in parts)
    assert " ".join(parts) == text
    assert split_text("   ") == []
    unbroken = "x" * 2500
    assert "".join(split_text(unbroken, limit=1000)) == unbroken


def test_instructions_template() -> None:
    rendered = render_instructions("Sei l'assistente di {{Cliente}} ({{ Cliente }}).", "Forno Rossi")
    assert rendered == "Sei l'assistente di Forno Rossi (Forno Rossi)."
    assert "Italian (it)" in with_context(rendered, language="it")
    assert with_context(rendered, language=None) == rendered


def test_citations_are_stripped() -> None:
    assert strip_citations("Spedizione gratuita sopra 50 €【4:0†catalogo.pdf】.") == "Spedizione gratuita sopra 50 €."


def test_graph_error_classification() -> None:
    final = classify(400, {"error": {"code": 131047, "message": "Re-engagement message"}}, None)
    assert not final.retryable and final.code == 131047
    assert classify(400, {"error": {"code": 130429}}, "2").retryable
    assert classify(503, {}, None).retryable
    assert classify(400, {"error": {"code": 131026}}, None).retryable is False


async def test_token_bucket_paces_bursts() -> None:
    bucket = TokenBucket(rate=50)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(60):
        await bucket.take()
    # 50 go at once, the other 10 wait about 10/50 s.
    assert loop.time() - start >= 0.15


def test_config_from_env_and_cli() -> None:
    cfg = Config.from_env({"BOT_PORT": "9000", "BOT_AUTOREPLY": "0", "BOT_HANDOFF_KEYWORDS": "aiuto, umano"},
                          host="0.0.0.0")
    assert (cfg.port, cfg.autoreply, cfg.host) == (9000, False, "0.0.0.0")
    assert cfg.handoff_keywords == ("aiuto", "umano")
    defaults = Config.from_env({})
    assert (defaults.host, defaults.port, defaults.model, defaults.burst_window_ms) == (
        "127.0.0.1", 8080, "gpt-4o-mini", 1000)
    assert defaults.db_path == Path("data/bot.db")
    with pytest.raises(ConfigError, match="BOT_PORT"):
        Config.from_env({"BOT_PORT": "eighty"})
    with pytest.raises(ConfigError, match="BOT_REACTION"):
        Config.from_env({"BOT_REACTION": "maybe"})


@pytest.mark.sqlite_only("file modes and WAL are the SQLite file's (tests/test_postgres.py covers migrations there)")
async def test_database_is_private_and_migrated(tmp_path: Path) -> None:
    db = Database.create(tmp_path / "nested" / "data" / "bot.db")
    await db.open()
    try:
        assert db.applied_migrations[0] == 1
        assert await db.fetchval("PRAGMA journal_mode") == "wal"
        assert ((tmp_path / "nested" / "data").stat().st_mode & 0o777) == 0o700
        assert ((tmp_path / "nested" / "data" / "bot.db").stat().st_mode & 0o777) == 0o600
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO errors (type, message, created_at) VALUES ('x', 'y', 0)")
                raise RuntimeError("roll back")
        assert await db.fetchval("SELECT COUNT(*) FROM errors") == 0
    finally:
        await db.close()
    again = Database.create(tmp_path / "nested" / "data" / "bot.db")
    await again.open()
    assert again.applied_migrations == db.applied_migrations
    await again.close()


class Recorder(Actor[str]):
    """A test actor that records what it handles."""

    __slots__ = ("seen",)

    def __init__(self, key: str, on_exit: Any, seen: list[tuple[str, Any]], idle: float,
                 clock: IdleClock | None = None) -> None:
        super().__init__(key, idle_seconds=idle, on_exit=on_exit, clock=clock)
        self.seen = seen

    async def handle(self, message: Any) -> None:
        if message == "boom":
            raise RuntimeError("boom")
        if message == "slow":
            await asyncio.sleep(0.05)
        self.seen.append((self.key, message))


async def test_actor_passivates_when_idle_and_comes_back() -> None:
    seen: list[tuple[str, Any]] = []
    registry: Registry[str] = Registry(lambda key, on_exit: Recorder(key, on_exit, seen, idle=0.05))
    registry.tell("a", 1)
    first = registry.get("a")
    assert first is not None and registry.live == 1
    assert first.task is not None
    await first.task  # the run loop ends as soon as the mailbox is empty: an idle actor holds no task
    assert first.task is None and registry.live == 1
    await wait_until(lambda: _now(registry.live == 0), timeout=2, what="passivation after the idle time")
    assert first.stopped
    registry.tell("a", 2)
    second = registry.get("a")
    assert second is not None and second is not first
    await registry.stop_all(1)
    assert seen == [("a", 1), ("a", 2)]


async def test_actors_sharing_an_idle_clock_passivate_each_after_its_own_idle_time() -> None:
    seen: list[tuple[str, Any]] = []
    clock = IdleClock()
    registry: Registry[str] = Registry(lambda key, on_exit: Recorder(key, on_exit, seen, idle=0.1, clock=clock))
    registry.tell("a", 1)
    registry.tell("b", 1)
    a, b = registry.get("a"), registry.get("b")
    assert a is not None and a.task is not None and b is not None and b.task is not None
    await asyncio.gather(a.task, b.task)
    assert len(clock) == 2  # both idle, on the one clock
    registry.tell("a", 2)  # busy again: out of the clock until its run loop ends
    assert len(clock) == 1
    assert a.task is not None
    await a.task
    assert len(clock) == 2 and not a.stopped
    await wait_until(lambda: _now(registry.live == 0), timeout=2, what="both passivated")
    assert a.stopped and b.stopped and len(clock) == 0
    assert sorted(seen) == [("a", 1), ("a", 2), ("b", 1)]


async def test_a_failing_passivation_does_not_keep_the_other_idle_actors_live() -> None:
    clock = IdleClock()
    exited: list[str] = []

    def on_exit(actor: Actor[str]) -> None:
        exited.append(actor.key)
        if actor.key == "bad":
            raise RuntimeError("boom")

    actors = [Recorder(key, on_exit, [], idle=0.01, clock=clock) for key in ("bad", "good")]
    for actor in actors:
        actor.tell(1)
    await asyncio.gather(*(a.task for a in actors if a.task is not None))
    await wait_until(lambda: _now(len(exited) == 2), timeout=2, what="both passivations")
    assert sorted(exited) == ["bad", "good"] and actors[1].stopped and len(clock) == 0


async def test_actor_survives_a_crashing_message_and_keeps_order() -> None:
    seen: list[tuple[str, Any]] = []
    registry: Registry[str] = Registry(lambda key, on_exit: Recorder(key, on_exit, seen, idle=5))
    for msg in ["slow", "boom", 3, "slow", 4]:
        registry.tell("k", msg)
    registry.tell("other", 9)
    await registry.stop_all(2)
    assert [m for k, m in seen if k == "k"] == ["slow", 3, "slow", 4]
    assert ("other", 9) in seen


async def test_stop_handles_work_queued_before_it_then_cancels_after_timeout() -> None:
    seen: list[tuple[str, Any]] = []
    registry: Registry[str] = Registry(lambda key, on_exit: Recorder(key, on_exit, seen, idle=5))
    registry.tell("k", 1)
    registry.tell("k", "slow")
    await registry.stop_all(2)
    assert seen == [("k", 1), ("k", "slow")]
    registry.tell("k", 5)  # after stop_all the registry is closed: the inbox keeps such work
    assert registry.live == 0


def test_backoff_needs_both_tries_and_time() -> None:
    import time as _time

    from bot.backoff import Backoff

    policy = Backoff(base=2, maximum=60, attempts=5, budget=120)
    now = _time.monotonic()
    assert not policy.exhausted(4, now - 500)  # not enough tries yet
    assert not policy.exhausted(5, now - 10)  # enough tries, but the outage may still pass
    assert policy.exhausted(5, now - 121)
    assert policy.exhausted(5)  # no clock given: tries alone decide
    assert 1.5 <= policy.delay(1) <= 2.5
    assert policy.delay(10) <= 75  # capped at maximum, plus jitter
    assert policy.delay(1, retry_after=30) == 30
    assert policy.delay(1, retry_after=10_000) == 120  # a server cannot park us for hours


async def _now(value: bool) -> bool:
    return value


async def test_admission_serves_the_oldest_message_first_and_never_more_than_its_limit() -> None:
    gate = Admission(2)
    order: list[float] = []
    release = asyncio.Event()
    peak = 0

    async def turn(message_id: float) -> None:
        nonlocal peak
        async with gate.slot(order=message_id):
            peak = max(peak, gate.running)
            order.append(message_id)
            await release.wait()

    first = [asyncio.create_task(turn(n)) for n in (10, 11)]
    await wait_until(lambda: gate.running == 2, what="two running")
    later = [asyncio.create_task(turn(n)) for n in (50, 3, 20)]  # 3: a message taken over from a dead process
    await wait_until(lambda: gate.waiting == 3, what="three waiting")
    cancelled = asyncio.create_task(turn(1))
    await wait_until(lambda: gate.waiting == 4, what="four waiting")
    cancelled.cancel()
    release.set()
    await asyncio.gather(*first, *later)
    assert order == [10, 11, 3, 20, 50] and peak == 2 and gate.running == 0


async def test_admission_closed_lets_running_turns_finish_and_turns_away_the_waiting() -> None:
    gate = Admission(1)
    release = asyncio.Event()
    outcomes: list[str] = []

    async def turn(n: int) -> None:
        try:
            async with gate.slot(order=n):
                await release.wait()
                outcomes.append(f"ran {n}")
        except Draining:
            outcomes.append(f"not begun {n}")

    tasks = [asyncio.create_task(turn(n)) for n in range(3)]
    await wait_until(lambda: gate.waiting == 2, what="two waiting")
    gate.close()
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(outcomes) == ["not begun 1", "not begun 2", "ran 0"] and gate.running == 0
    with pytest.raises(Draining):
        async with gate.slot():
            pass



async def test_admission_yields_to_slow_acks_and_gives_the_slots_back_when_ingest_is_quiet() -> None:
    now = [0.0]
    gate = Admission(8, ack_target=0.02, clock=lambda: now[0])

    def ack(seconds: float, windows: int = 1) -> None:
        for _ in range(windows):
            now[0] += 0.06  # each call closes a window
            gate.acked(seconds)

    ack(0.2, windows=6)  # acks are slow: the turns' allowance falls, but never below one
    assert gate.allowed == 1
    release = asyncio.Event()
    started: list[int] = []

    async def turn(n: int) -> None:
        async with gate.slot(order=n):
            started.append(n)
            await release.wait()

    tasks = [asyncio.create_task(turn(n)) for n in range(5)]
    await wait_until(lambda: gate.waiting == 4, what="four waiting behind the one allowed")
    assert started == [0]
    ack(0.001, windows=2)  # acks are fast again: one more slot per window, handed to the oldest
    await wait_until(lambda: len(started) == 3, what="two more admitted")
    assert started == [0, 1, 2] and gate.allowed == 3
    now[0] += 1.0  # no webhook for a while: every slot is the turns' again
    release.set()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2, 3, 4] and gate.allowed == 8 and gate.running == 0


def test_sized_chunks_come_in_few_shapes_and_keep_every_item_in_order() -> None:
    from bot.persistence.database import sized_chunks

    for n in (0, 1, 5, 64, 255, 256, 257, 1000):
        items = list(range(n))
        chunks = sized_chunks(items, 256)
        assert [x for c in chunks for x in c] == items
        assert all(len(c) in {1, 2, 4, 8, 16, 32, 64, 128, 256} for c in chunks)
        assert [len(c) for c in chunks] == sorted((len(c) for c in chunks), reverse=True)


def test_in_lists_are_padded_with_their_last_value_to_a_power_of_two() -> None:
    from bot.persistence.database import in_list

    assert in_list([7], 3) == ("$3", (7,))
    assert in_list([1, 2, 3], 1) == ("$1, $2, $3, $4", (1, 2, 3, 3))
    assert in_list([], 1) == ("", ())


async def test_one_slow_window_alone_does_not_cut_the_turns_and_ingest_starts_slowly() -> None:
    now = [0.0]
    gate = Admission(8, ack_target=0.02, clock=lambda: now[0])

    def window(seconds: float) -> None:
        now[0] += 0.06  # each call closes the window the previous call's ack fell in
        gate.acked(seconds)

    window(0.001)  # the first webhook after a quiet spell: a slow start from a quarter of the limit
    assert gate.allowed == 2
    for _ in range(6):
        window(0.001)  # fast acks: one more slot a window, up to the limit
    assert gate.allowed == 8
    for seconds in (0.2, 0.001, 0.2, 0.001, 0.001):  # isolated pauses (a collection), not congestion
        window(seconds)
    assert gate.allowed == 8
    for _ in range(2):
        window(0.2)  # two slow windows in a row: a third fewer
    assert gate.allowed == 5


@pytest.mark.sqlite_only("the WAL is the SQLite file's")
async def test_the_wal_is_checkpointed_once_per_limit_not_after_every_later_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A RESTART checkpoint rewinds the WAL but leaves the file at its size, so a size test then asked
    # for a checkpoint after every group (589 for 40,000 webhooks); TRUNCATE empties the file.
    from bot.persistence import sqlite as sqlite_backend
    from bot.persistence.database import Stmt

    monkeypatch.setattr(sqlite_backend, "WAL_LIMIT_BYTES", 256 * 1024)
    db = Database.create(tmp_path / "bot.db")
    await db.open()
    checkpoints: list[str] = []
    try:
        await db.instrument(lambda sql: checkpoints.append(sql) if "wal_checkpoint" in sql else None, None)
        largest = 0
        for i in range(300):  # each its own group: about 2.5 MB written to the WAL in all
            await db.write([Stmt("INSERT INTO errors (type, message, created_at) VALUES ($1, $2, 0)",
                                 (f"t{i}", "x" * 4000))])
            largest = max(largest, db.wal_bytes())  # type: ignore[attr-defined]
        assert 3 <= len(checkpoints) <= 40, len(checkpoints)
        assert all("TRUNCATE" in sql for sql in checkpoints)
        assert largest < 2 * 256 * 1024  # bounded by the limit and one group, not growing
        assert await db.fetchval("SELECT COUNT(*) FROM errors") == 300
    finally:
        await db.close()


def test_a_bot_answering_each_reply_at_once_is_a_loop_but_a_flood_after_one_reply_is_not() -> None:
    bot = LoopWatch()
    for n in range(LOOP_FAST_REPLIES):
        assert not bot.looping
        bot = bot.sent(100.0 + n).heard(f"automatic answer {n}", 100.5 + n)
    assert bot.looping  # each of our replies answered within a second
    flood = LoopWatch().sent(100.0)
    for n in range(5 * LOOP_FAST_REPLIES):
        flood = flood.heard(f"spam {n}", 100.1 + n / 100)
    assert not flood.looping and flood.fast_replies == 1  # many messages after one reply: a flood, not a bot
    slow = LoopWatch().sent(100.0).heard("hi", 100.5).sent(101.0).heard("later", 200.0)
    assert slow.fast_replies == 0  # a slow answer starts the count again


def test_values_statements_come_in_sized_chunks_with_every_row_in_order() -> None:
    from bot.persistence.database import values_stmts

    rows = [(n, f"v{n}") for n in range(5)]
    stmts = values_stmts("INSERT INTO t (a, b) VALUES {rows}", rows, returning=True)
    assert [s.sql for s in stmts] == ["INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6), ($7, $8)",
                                      "INSERT INTO t (a, b) VALUES ($1, $2)"]
    assert [v for s in stmts for v in s.args] == [v for row in rows for v in row] and all(s.rows for s in stmts)
    assert values_stmts("INSERT INTO t (a) VALUES {rows}", []) == []
