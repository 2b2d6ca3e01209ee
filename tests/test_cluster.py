"""Several server processes on one PostgreSQL database, here as several apps in one test (same schema).

Each app has its own lock and bus connections, exactly as a process would: who answers a conversation
is decided by PostgreSQL's advisory locks, and wake-ups and live events travel by LISTEN/NOTIFY.
The three-process run with a SIGKILL is in tests/test_cluster_processes.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bot.cluster.node import Node
from bot.cluster.rate import SharedRate
from bot.cluster.registry import ClusterRegistry
from bot.domain.conversation import ConversationKey
from bot.persistence.postgres import PostgresDatabase
from bot.web.auth import SESSION_COOKIE
from bot.web.keys import CLUSTER, DATABASE, LIFECYCLE, LIVE, REGISTRY
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import PHONE_NUMBER_ID, text_message
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import sign_in, wait_handled, wait_until
from tests.web.helpers import sign_in as web_sign_in

pytestmark = pytest.mark.postgres_only

ANNA = "393330001001"


def node_of(client: TestClient) -> Node:
    node = client.app[CLUSTER]
    assert node is not None, "on PostgreSQL every app is one of a cluster"
    return node


def registry_of(client: TestClient) -> ClusterRegistry:
    registry = client.app[REGISTRY]
    assert isinstance(registry, ClusterRegistry)
    return registry


async def test_a_message_stored_by_one_process_is_answered_once_by_the_owner(make_client: ClientFactory,
                                                                           fake_graph: FakeGraph) -> None:
    a, b = await make_client(), await make_client()
    await post_webhook(a, text_message("wamid.C1", ANNA, "first, to A"))
    await wait_handled(a, 1)
    key = ConversationKey(PHONE_NUMBER_ID, ANNA)
    # A answered and still runs Anna's actor (it passivates only when idle for a while): it owns her.
    assert registry_of(a).get(key) is not None and registry_of(b).get(key) is None
    resp = await post_webhook(b, text_message("wamid.C2", ANNA, "second, to B"))
    assert resp.status == 200
    await wait_handled(b, 2)
    await fake_graph.wait_until(lambda: len(fake_graph.texts_to(ANNA)) == 2, what="two replies")
    # B could not take her lock, so it woke A, which answered: one reply per message, none from B.
    assert registry_of(b).handed_on >= 1 and registry_of(b).get(key) is None
    assert len(fake_graph.texts_to(ANNA)) == 2
    assert [t for t in fake_graph.texts_to(ANNA) if "second, to B" in t]


async def test_a_process_stores_for_a_conversation_another_runs_without_waiting_for_its_locks(
        make_client: ClientFactory, fake_graph: FakeGraph) -> None:
    a, b = await make_client(), await make_client()
    now = int(time.time())
    await post_webhook(a, text_message("wamid.K1", ANNA, "first, to A", name="Anna", timestamp=str(now - 10)))
    await wait_handled(a, 1)
    assert registry_of(a).owns(ConversationKey(PHONE_NUMBER_ID, ANNA))
    db = a.app[DATABASE]
    assert isinstance(db, PostgresDatabase)
    heard = await db.fetchval("SELECT last_inbound_at FROM conversations WHERE customer_id = $1", ANNA)
    # A's writer in the middle of a group of Anna's turns: her conversation and contact rows are locked.
    holder = await db.connect("test")
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM conversations WHERE customer_id = $1 FOR UPDATE", ANNA)
        await holder.execute("SELECT 1 FROM contacts WHERE customer_id = $1 FOR UPDATE", ANNA)
        # B stores her next message (with a new profile name) without waiting for A's locks.
        resp = await asyncio.wait_for(post_webhook(b, text_message(
            "wamid.K2", ANNA, "second, to B", name="Anna Rossi", timestamp=str(now - 5))), 5)
        assert resp.status == 200
        assert await holder.fetchval("SELECT status FROM inbox WHERE wamid = 'wamid.K2'") == "pending"
        await tx.rollback()
    finally:
        await holder.close()
    # A, the owner, answers it and writes what the message told (B's ingest left her rows alone).
    await fake_graph.wait_until(lambda: len(fake_graph.texts_to(ANNA)) == 2, what="two replies")
    conv = await db.fetchrow("SELECT profile_name, last_inbound_at FROM conversations WHERE customer_id = $1", ANNA)
    assert conv is not None and conv["profile_name"] == "Anna Rossi" and conv["last_inbound_at"] == heard + 5
    assert await db.fetchval("SELECT name FROM contacts WHERE customer_id = $1", ANNA) == "Anna Rossi"


async def test_a_burst_spread_over_two_processes_is_one_turn(make_client: ClientFactory, fake_openai: FakeOpenAI,
                                                              fake_graph: FakeGraph) -> None:
    a, b = await make_client(burst_window_ms=1500), await make_client(burst_window_ms=1500)
    await post_webhook(a, text_message("wamid.J1", ANNA, "hello"))
    await fake_graph.wait_until(lambda: len(fake_graph.texts_to(ANNA)) == 1, what="the first reply")
    # The next two come in quick succession, the load balancer sending one to each process: A (the
    # owner) takes the first into its burst window; B stores the second, later, and wakes A.
    await post_webhook(a, text_message("wamid.J2", ANNA, "I would like"))
    await post_webhook(b, text_message("wamid.J3", ANNA, "the blue one"))
    await fake_graph.wait_until(lambda: len(fake_graph.texts_to(ANNA)) == 2, what="the second reply")
    await wait_handled(a, 3)
    requests = fake_openai.responses_requests()
    assert len(requests) == 2, "the two messages must be one turn"
    assert "I would like" in str(requests[1]["input"]) and "the blue one" in str(requests[1]["input"])


async def test_an_operator_on_one_process_sees_what_another_ingested(make_client: ClientFactory) -> None:
    a, b = await make_client(), await make_client()
    await post_webhook(a, text_message("wamid.L1", ANNA, "live?"))

    def seen_on_b() -> bool:
        events = b.app[LIVE].since(0) or []
        return any(e.kind == "message" and e.data.get("conversation") == ANNA for e in events)

    async def check() -> bool:
        return seen_on_b()

    await wait_until(check, what="A's ingest shown on B's live stream")


async def test_when_a_process_stops_another_takes_its_conversations(make_client: ClientFactory,
                                                                   fake_graph: FakeGraph) -> None:
    a, b = await make_client(), await make_client()
    await post_webhook(a, text_message("wamid.S1", ANNA, "hello A"))
    await wait_handled(a, 1)
    await a.close()  # a SIGTERM: A drains, then gives its locks back
    await post_webhook(b, text_message("wamid.S2", ANNA, "hello B"))
    await wait_handled(b, 2)
    key = ConversationKey(PHONE_NUMBER_ID, ANNA)
    assert registry_of(b).get(key) is not None and registry_of(b).claimed >= 1
    await fake_graph.wait_until(lambda: len(fake_graph.texts_to(ANNA)) == 2, what="B's reply")


async def test_work_left_by_a_dead_process_is_swept_up(make_client: ClientFactory, fake_graph: FakeGraph) -> None:
    a, b = await make_client(), await make_client()
    # A stores the message and then dies before it claims the conversation (it tells nobody).
    registry_of(a).closing = True
    assert (await post_webhook(a, text_message("wamid.D1", ANNA, "anyone?"))).status == 200
    # B's sweeper finds the message nobody is on, takes the conversation and answers, within seconds.
    await wait_handled(b, 1, timeout=10)
    await fake_graph.wait_until(lambda: len(fake_graph.texts_to(ANNA)) == 1, what="the swept-up reply")
    assert registry_of(b).get(ConversationKey(PHONE_NUMBER_ID, ANNA)) is not None


async def test_two_processes_starting_together_replay_a_message_once(make_client: ClientFactory,
                                                                     fake_graph: FakeGraph) -> None:
    a = await make_client()
    registry_of(a).closing = True  # stored, never answered: then the process stops
    await post_webhook(a, text_message("wamid.R1", ANNA, "answer me once"))
    await a.close()
    b, _ = await asyncio.gather(make_client(), make_client())
    await wait_handled(b, 1)
    await asyncio.sleep(1.5)  # a second replay would have sent by now
    assert len(fake_graph.texts_to(ANNA)) == 1


async def test_a_process_that_loses_its_locks_says_so_and_stops(make_client: ClientFactory) -> None:
    a = await make_client()
    asked: list[bool] = []
    a.app[LIFECYCLE].shutdown = lambda: asked.append(True)
    healthy = await (await a.get("/healthz")).json()
    assert healthy["ready"] is True and healthy["mode"] == "cluster" and healthy["database"] == "postgres"
    pid = node_of(a).ownership.backend_pid
    await a.app[DATABASE].fetchval("SELECT pg_terminate_backend($1)", pid)  # as a network cut would
    await wait_until(lambda: bool(asked), what="the shutdown asked for")
    resp = await a.get("/healthz")
    body = await resp.json()
    assert resp.status == 503 and body["ready"] is False
    assert "locks" in " ".join(body["reasons"])
    assert registry_of(a).closing  # it takes no new work meanwhile



async def test_a_cluster_job_runs_in_one_process_at_a_time(make_client: ClientFactory) -> None:
    a, b = await make_client(), await make_client()
    order: list[str] = []

    async def job(node: Node, name: str, hold: float) -> None:
        async with node.exclusive("test-job"):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    first = asyncio.create_task(job(node_of(a), "a", 0.5))
    await wait_until(lambda: bool(order), what="A inside")
    await job(node_of(b), "b", 0.0)
    await first
    assert order == ["a in", "a out", "b in", "b out"]


async def test_the_send_rate_is_shared_by_every_process(make_client: ClientFactory) -> None:
    a = await make_client()
    db = a.app[DATABASE]
    assert isinstance(db, PostgresDatabase)
    rate = 10.0
    one, two = SharedRate(db, rate), SharedRate(db, rate)
    started = time.monotonic()
    # 30 sends from one number: the bucket holds 10, then 10 a second, whichever process sends them.
    await asyncio.gather(*(r.take("pn-shared") for r in [one, two] * 15))
    elapsed = time.monotonic() - started
    # Each process alone would have been allowed its 15 within 0.5 s.
    assert elapsed >= 1.8, f"30 sends at 10/s from a full bucket of 10 took {elapsed:.2f} s"


async def test_locks_are_per_installation(tmp_path: Path, make_client: ClientFactory) -> None:
    a, same = await make_client(), await make_client()
    other = await make_client(data_dir=tmp_path / "other")  # another schema: another installation
    key = ConversationKey(PHONE_NUMBER_ID, "393330009999")
    assert await node_of(a).ownership.claim([key]) == {key}
    assert await node_of(same).ownership.claim([key]) == set()  # held by A
    assert await node_of(other).ownership.claim([key]) == {key}  # the same id, another lock space


async def test_an_operator_on_another_process_pauses_the_ai_and_is_sent_once(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    a, b = await make_client(), await make_client()
    await post_webhook(a, text_message("wamid.O1", ANNA, "a question for A"))
    await wait_handled(a, 1)
    # A owns Anna; the operator's browser is on B: B queues the message, A's actor sends it.
    resp = await b.post(f"/api/conversations/{ANNA}/messages", json={"text": "Marco here"},
                        headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert resp.status == 202, await resp.text()
    await fake_graph.wait_until(lambda: "Marco here" in fake_graph.texts_to(ANNA), what="the operator's message")
    await post_webhook(b, text_message("wamid.O2", ANNA, "thanks Marco"))
    await wait_handled(b, 2)
    await asyncio.sleep(0.5)
    assert len(fake_openai.responses_requests()) == 1  # paused for the person, whichever process stored it
    assert fake_graph.texts_to(ANNA).count("Marco here") == 1


async def test_a_session_opened_on_one_process_works_on_another(make_client: ClientFactory) -> None:
    a, b = await make_client(), await make_client()
    await sign_in(a)
    cookie = a.session.cookie_jar.filter_cookies(a.make_url("/"))[SESSION_COOKIE].value
    page = await b.get("/inbox", cookies={SESSION_COOKIE: cookie}, allow_redirects=False)
    assert page.status == 200
    assert (await b.get("/inbox", allow_redirects=False)).status in (302, 303)  # and not without it


async def test_the_sign_in_throttle_counts_attempts_at_every_process(make_client: ClientFactory) -> None:
    a, b = await make_client(), await make_client()
    for _ in range(3):
        assert (await web_sign_in(a, password="wrong-password")).status == 401
    for _ in range(2):
        assert (await web_sign_in(b, password="wrong-password")).status == 401
    # Five failures from this address, spread over two processes: the sixth waits, on either of them.
    assert (await web_sign_in(a, password="wrong-password")).status == 429
    assert (await web_sign_in(b)).status == 429
