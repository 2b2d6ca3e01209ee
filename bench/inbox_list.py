"""`python -m bench.inbox_list`: the inbox list at 50,000 conversations, timed through the real HTTP API.

Fills a fresh SQLite database through the server's own write paths (the ingest for customers'
messages, the outbox statements for replies, the repositories for states, labels and assignments),
starts `run.py` on loopback (bench.server), signs in as an operator, and times the first page of every tab, two
labels and four searches. Prints a table with pass/fail against 50 ms (the median of the runs; the
machine is shared, so one slow run says little) and exits 1 when a filter fails.

    .venv/bin/python -m bench.inbox_list                   # 50,000 conversations, 20 runs per filter
    .venv/bin/python -m bench.inbox_list --conversations 5000 --runs 5 --keep
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import percentile
from bench.server import Server, ServerSettings
from bot.actors.ingest import Ingest
from bot.domain.conversation import InboundMessage, OutboundMessage
from bot.observability.logs import configure_logging
from bot.persistence import Repositories
from bot.persistence import inbox as inbox_sql
from bot.persistence import outbox as outbox_sql
from bot.persistence.conversations import TEST_NUMBER_ID, Conversation, ConversationRepo
from bot.persistence.database import Database, Stmt
from bot.whatsapp.events import WebhookBatch

TARGET_MS = 50.0
BUSINESS = "100000000000001"
PASSWORD = "bench-admin-password"  # what bench.server gives run.py
FIRST = ["Giulia", "Marco", "Anna", "Luca", "Sara", "Paolo", "Elena", "Davide", "Chiara", "Matteo", "Francesca",
         "Andrea", "Laura", "Stefano", "Valentina", "Hans", "Jürgen", "Zoë", "Noémie", "José"]
LAST = ["Rossi", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco", "Bruno", "Gallo", "Conti", "Costa",
        "Fontana", "Moretti", "Barbieri", "Lombardi", "Müller", "Schäfer", "Lefèvre", "García", "Núñez"]
WORDS = ("buongiorno vorrei sapere se avete ancora la borsa rossa in pelle oppure il caffè espresso macinato per "
         "moka quanto costa la spedizione a milano torino napoli quando arriva il mio ordine grazie mille perché "
         "non risponde nessuno pane integrale focaccia genovese olio extravergine taglia grande colore blu verde "
         "posso pagare alla consegna avete un negozio fisico orari di apertura sabato domenica reso rimborso").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


async def fill(db: Database, conversations: int, messages: int, rng: random.Random) -> dict[str, Any]:
    """Conversations, their messages and replies, states, labels and assignments; returns what to search for."""
    repos = Repositories.on(db)
    ingest = Ingest(db=db, tell=lambda key, message: None)
    start = time.time() - 30 * 86400
    step = 30 * 86400 / max(1, conversations * messages)
    phones = [f"39{3000000000 + i:010d}" for i in range(conversations)]
    batch: list[InboundMessage] = []
    n = 0
    for i, phone in enumerate(phones):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        business = TEST_NUMBER_ID if i % 250 == 0 else BUSINESS
        for m in range(messages):
            n += 1
            batch.append(InboundMessage(
                wamid=f"wamid.BENCH{n}", phone_number_id=business, customer_id=phone, wa_id=phone, user_id=None,
                profile_name=name, type="text", text=_text(rng, rng.randint(4, 14)),
                payload={"type": "text"}, timestamp=int(start + (i * messages + m) * step)))
        if len(batch) >= 500:
            await ingest.accept(WebhookBatch(messages=batch, statuses=[], echoes=[]))
            batch = []
    if batch:
        await ingest.accept(WebhookBatch(messages=batch, statuses=[], echoes=[]))
    # Every message was answered: inbox rows closed, and an AI reply per conversation (1% refused by Meta).
    ids = [int(r[0]) for r in await db.fetch("SELECT id FROM inbox")]
    for k in range(0, len(ids), 5000):
        await db.write([inbox_sql.close_stmt(ids[k : k + 5000], "done")])
    rows = await db.fetch("SELECT * FROM conversations ORDER BY id")
    convs = [Conversation.from_row(r) for r in rows]
    for k in range(0, len(convs), 500):
        unit: list[Stmt] = []
        for conv in convs[k : k + 500]:
            unit += outbox_sql.enqueue_stmts(conv.key, [OutboundMessage("text", "Echo: " + _text(rng, 8))],
                                             author="ai", reply_to_inbox_id=None, now=conv.last_activity_at)
        await db.write(unit)
    await db.execute("UPDATE outbox SET status = 'sent' WHERE status = 'queued'")
    failed = [c.key for c in convs[::100]]
    for key in failed:
        await db.execute("UPDATE outbox SET status = 'failed', error_code = 131047 WHERE phone_number_id = $1 "
                         "AND customer_id = $2", key.business, key.customer)
    # States the actors would have set: 2% wait for a person, 3% are held by one.
    now = time.time()
    unit = []
    for j, conv in enumerate(convs):
        if j % 50 == 1:
            unit.append(ConversationRepo.save_stmt(conv.paused_by_human(until=None, now=now, needs_human=True), now))
        elif j % 33 == 2:
            unit.append(ConversationRepo.save_stmt(conv.paused_by_human(until=None, now=now), now))
        if len(unit) >= 500:
            await db.write(unit)
            unit = []
    if unit:
        await db.write(unit)
    # Assignments (5%) and labels: a big one on 10%, a small one on 40 conversations.
    users = ["admin", "maria", "luca"]
    for j, conv in enumerate(convs[::20]):
        await repos.conversations.set_assigned(conv.id, users[j % 3])
    big, small = await repos.labels.ensure("Da richiamare", "#fb8c00"), await repos.labels.ensure("VIP", "#e53935")
    for j, conv in enumerate(convs):
        if j % 10 == 3:
            await db.execute("INSERT INTO conversation_labels (conversation_id, label_id, created_at) "
                             "VALUES ($1, $2, $3)", conv.id, big.id, now)
    for conv in rng.sample(convs, 40):
        await repos.labels.attach(conv.id, small.id)
    rare = convs[len(convs) // 2 + 1]  # (not a test chat: those are every 250th)
    contact = await repos.contacts.for_conversation(rare.phone_number_id, rare.customer_id)
    assert contact is not None
    await repos.contacts.update(contact.id, source="operator", name="Ottavia Zanzottera")
    return {"big": big.id, "small": small.id, "phone": phones[len(phones) // 3][4:10]}


async def sign_in(session: aiohttp.ClientSession, base: str) -> None:
    """The real sign-in form, as a browser would post it."""
    page = await (await session.get(f"{base}/login")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    resp = await session.post(f"{base}/login", data={"username": "admin", "password": PASSWORD,
                                                     "csrf_token": token.group(1), "next": "/inbox"},
                              allow_redirects=False)
    assert resp.status == 303, await resp.text()


async def measure(session: aiohttp.ClientSession, url: str, runs: int) -> tuple[int, list[float]]:
    """Rows of the first page, and the time of each run in ms (after two warm-ups)."""
    times: list[float] = []
    rows = 0
    for i in range(runs + 2):
        started = time.perf_counter()
        async with session.get(url) as resp:
            body = await resp.json()
        elapsed = (time.perf_counter() - started) * 1000
        assert resp.status == 200, body
        rows = len(body.get("conversations", [])) if "conversations" in body else len(body.get("counts", {}))
        if i >= 2:
            times.append(elapsed)
    return rows, times


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbox_list", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--messages", type=int, default=2, help="customer messages per conversation")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    configure_logging(level=logging.WARNING)  # the server's info lines would bury the table
    work = Path(tempfile.mkdtemp(prefix="bench-inbox-"))
    rng = random.Random(7)
    try:
        db = Database.create(work / "data" / "bot.db")
        await db.open()
        started = time.monotonic()
        try:
            found = await fill(db, args.conversations, args.messages, rng)
            total = await db.fetchval("SELECT COUNT(*) FROM conversations")
            messages = await db.fetchval("SELECT (SELECT COUNT(*) FROM inbox) + (SELECT COUNT(*) FROM outbox)")
        finally:
            await db.close()
        print(f"filled {total:,} conversations, {messages:,} messages in {time.monotonic() - started:.0f} s "
              f"({work})", file=sys.stderr)
        # The server in its own process (as in production), so that the client's work is not timed as its.
        # No model calls happen (auto-reply off), so the fakes' addresses only have to be well formed.
        nowhere = {"openai": "http://127.0.0.1:9/v1", "graph": "http://127.0.0.1:9/v23.0"}
        server = await Server.start(work, nowhere, ServerSettings(extra={"BOT_AUTOREPLY": "0"}))
        base = f"http://127.0.0.1:{server.port}"
        filters = [(f"tab: {tab}", f"/api/conversations?tab={tab}") for tab in
                   ("all", "needs_human", "paused", "failed", "mine", "unassigned", "test")]
        filters += [
            ("label: 10% of conversations", f"/api/conversations?label={found['big']}"),
            ("label: 40 conversations", f"/api/conversations?label={found['small']}"),
            ("search: a rare name", "/api/conversations?q=zanzottera"),
            ("search: mueller (Müller)", "/api/conversations?q=mueller"),
            ("search: two message words", "/api/conversations?q=borsa%20rossa"),
            ("search: part of a number", f"/api/conversations?q={found['phone']}"),
            ("tab counts", "/api/conversations/counts"),
        ]
        results: list[tuple[str, int, float, float]] = []
        try:
            # unsafe=True: cookies from an IP address (loopback) are kept.
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                await sign_in(session, base)
                for name, path in filters:
                    rows, times = await measure(session, base + path, args.runs)
                    results.append((name, rows, statistics.median(times), percentile(times, 95)))
        finally:
            await server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    width = max(len(r[0]) for r in results)
    print(f"\nFirst page of each filter at {total:,} conversations (median of {args.runs} runs, "
          f"through HTTP on loopback):\n")
    print(f"| {'filter':<{width}} | rows | median ms | p95 ms | result |")
    print(f"|{'-' * (width + 2)}|------|-----------|--------|--------|")
    failed = 0
    for name, rows, median, p95 in results:
        ok = median < TARGET_MS
        failed += not ok
        print(f"| {name:<{width}} | {rows:>4} | {median:>9.1f} | {p95:>6.1f} | {'PASS' if ok else 'FAIL':<6} |")
    print(f"\ntarget: median under {TARGET_MS:g} ms; {len(results) - failed}/{len(results)} pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
