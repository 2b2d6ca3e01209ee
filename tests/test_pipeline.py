"""The pipeline end to end: order, bursts, privacy, retries, chain recovery, Graph errors."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson

from bot.actors.ingest import Ingest
from bot.web.keys import REGISTRY
from bot.whatsapp.events import parse_webhook
from tests.conftest import ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph, GraphFailure
from tests.fakes.meta import text_message
from tests.fakes.openai_server import EmptyReply, Fail, FakeOpenAI, Reply
from tests.helpers import reload_actors, repos_of, wait_handled, wait_sent, wait_until

PHONE = "393330000000"


def user_text(request: dict[str, Any]) -> str:
    """The customer text the model was given in one /responses request."""
    items = request["input"]
    if isinstance(items, str):
        return items
    texts = [i["content"] for i in items if i.get("role") == "user" and isinstance(i.get("content"), str)]
    return "\n".join(texts)


async def test_every_call_sends_model_instructions_and_safety_identifier(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client(instructions="Sei l'assistente di {{Cliente}}.", client_name="Forno Rossi")
    await post_webhook(client, text_message("wamid.A1", PHONE, "Buongiorno, siete aperti domenica?"))
    await fake_graph.wait_for_sent(1)
    await post_webhook(client, text_message("wamid.A2", PHONE, "E a che ora chiudete il sabato?"))
    await fake_graph.wait_for_sent(2)
    first, second = fake_openai.responses_requests()
    for req in (first, second):
        assert req["model"] == "gpt-4o-mini"
        assert req["instructions"].startswith("Sei l'assistente di Forno Rossi.")
        assert "{{Cliente}}" not in req["instructions"]
        assert len(req["safety_identifier"]) <= 64
    assert "previous_response_id" not in first or first["previous_response_id"] is None
    assert second["previous_response_id"] == fake_openai.last_response_ids()[0]
    assert first["safety_identifier"] == second["safety_identifier"]
    names = {tool["name"] for tool in first["tools"] if tool["type"] == "function"}
    assert {"search_products", "create_order", "update_contact", "generate_order_confirmation_form"} <= names
    assert "search_knowledge_base" not in names  # offered only while a local knowledge base is ready
    assert PHONE not in first["safety_identifier"]


async def test_order_per_conversation_under_random_latency(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    fake_openai.latency = (0.0, 0.05)
    client = await make_client()
    customers = [f"39333000{i:04d}" for i in range(8)]
    rng = random.Random(7)
    plan = [(c, n) for c in customers for n in range(5)]
    # Interleave customers randomly but keep each customer's own messages in order.
    queues = {c: [n for cc, n in plan if cc == c] for c in customers}
    order: list[tuple[str, int]] = []
    while any(queues.values()):
        c = rng.choice([c for c, q in queues.items() if q])
        order.append((c, queues[c].pop(0)))
    for c, n in order:
        assert (await post_webhook(client, text_message(f"wamid.{c}.{n}", c, f"msg {n}"))).status == 200
        await asyncio.sleep(rng.uniform(0, 0.01))
    await wait_handled(client, len(plan), timeout=20)
    for c in customers:
        joined = "\n".join(t.removeprefix("Echo: ") for t in fake_graph.texts_to(c))
        numbers = [int(line.split()[1]) for line in joined.splitlines()]
        assert numbers == [0, 1, 2, 3, 4], (c, joined)


async def test_burst_is_folded_into_one_turn(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client(burst_window_ms=400)
    for i, text in enumerate(["Ciao", "vorrei sapere", "se avete la taglia M"]):
        await post_webhook(client, text_message(f"wamid.B{i}", PHONE, text))
    await fake_graph.wait_for_sent(1)
    await wait_handled(client, 3)
    requests = fake_openai.responses_requests()
    assert len(requests) == 1
    assert user_text(requests[0]) == "Ciao\nvorrei sapere\nse avete la taglia M"
    assert fake_graph.texts() == ["Echo: Ciao\nvorrei sapere\nse avete la taglia M"]


async def test_messages_during_a_turn_go_to_the_next_turn(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    fake_openai.latency = 0.3
    client = await make_client()
    await post_webhook(client, text_message("wamid.T1", PHONE, "prima"))
    await fake_openai.wait_for_requests(1)
    await post_webhook(client, text_message("wamid.T2", PHONE, "seconda"))
    await post_webhook(client, text_message("wamid.T3", PHONE, "terza"))
    await fake_graph.wait_for_sent(2)
    await wait_handled(client, 3)
    assert fake_graph.texts() == ["Echo: prima", "Echo: seconda\nterza"]


async def test_no_phone_number_ever_reaches_openai(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    texts = [
        "Ciao, sono io, il mio numero è +39 333 000 0000, richiamami",
        "oppure scrivi al 3330000000 o allo 0039-333-000-0000",
        "numero (333) 000-0000 e anche 393330000000",
    ]
    for i, text in enumerate(texts):
        await post_webhook(client, text_message(f"wamid.P{i}", PHONE, text))
        await fake_graph.wait_for_sent(i + 1)
    traffic = fake_openai.all_traffic_text()
    digits_only = "".join(ch for ch in traffic if ch.isdigit())
    assert PHONE not in traffic
    assert "3330000000" not in traffic
    assert "333 000 0000" not in traffic
    assert "333000" not in digits_only.replace("1767225600", "")
    assert "[phone number removed]" in traffic
    # The customer still sees their own words answered.
    assert all(t.startswith("Echo: ") for t in fake_graph.texts())


async def test_transient_model_errors_are_retried(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    fake_openai.script.extend([Fail(500), Fail(429, retry_after=0.05), Fail(503), Reply("finalmente")])
    await post_webhook(client, text_message("wamid.R1", PHONE, "ci sei?"))
    await fake_graph.wait_for_sent(1)
    assert fake_graph.texts() == ["finalmente"]
    assert len(fake_openai.responses_requests()) == 4
    errors = await repos_of(client).db.fetchval("SELECT COUNT(*) FROM errors")
    assert errors == 0


async def test_final_model_errors_are_not_retried_and_are_recorded(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    fake_openai.script.append(Fail(429, code="insufficient_quota", message="You exceeded your current quota"))
    await post_webhook(client, text_message("wamid.Q1", PHONE, "Quanto costa la borsa rossa?"))
    await fake_graph.wait_for_sent(1)
    statuses = await wait_handled(client, 1)
    assert statuses == {"wamid.Q1": "failed"}
    assert len(fake_openai.responses_requests()) == 1
    repos = repos_of(client)
    row = await repos.db.fetchrow("SELECT type, message FROM errors")
    assert row is not None and row["type"] == "openai_quota" and "quota" in row["message"]
    reason = await repos.db.fetchval("SELECT last_error FROM inbox WHERE wamid = 'wamid.Q1'")
    assert "quota" in reason
    # The customer is not left in silence: a fixed fallback in their language.
    assert "persona" in fake_graph.texts()[0]


async def test_persistent_outage_marks_failed_after_five_tries(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    fake_openai.script.extend([Fail(500)] * 5)
    await post_webhook(client, text_message("wamid.O1", PHONE, "hello there, are you open today?"))
    assert await wait_handled(client, 1) == {"wamid.O1": "failed"}
    assert len(fake_openai.responses_requests()) == 5
    reason = await repos_of(client).db.fetchval("SELECT last_error FROM inbox")
    assert "5 tries" in reason


async def test_lost_chain_starts_a_new_one_without_failing(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    await post_webhook(client, text_message("wamid.C1", PHONE, "prima domanda"))
    await fake_graph.wait_for_sent(1)
    fake_openai.forget_all()
    await post_webhook(client, text_message("wamid.C2", PHONE, "seconda domanda"))
    await fake_graph.wait_for_sent(2)
    assert fake_graph.texts()[1] == "Echo: seconda domanda"
    requests = fake_openai.responses_requests()
    assert requests[1]["previous_response_id"]
    assert not requests[2].get("previous_response_id")
    stored = await repos_of(client).db.fetchval("SELECT last_response_id FROM conversations")
    assert stored == fake_openai.last_response_ids()[-1]


async def test_empty_model_output_never_sends_an_empty_message(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    fake_openai.script.append(EmptyReply())
    await post_webhook(client, text_message("wamid.E1", PHONE, "Hello, can you help me with an order?"))
    sent = await fake_graph.wait_for_sent(1)
    assert sent[0]["text"]["body"].strip()
    assert "team" in sent[0]["text"]["body"]


async def test_long_reply_is_split_below_4096(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    sentence = "Questa è una frase abbastanza lunga per riempire il messaggio. "
    fake_openai.script.append(Reply(sentence * 150))
    await post_webhook(client, text_message("wamid.L1", PHONE, "raccontami tutto"))
    await wait_handled(client, 1)
    await fake_graph.wait_for_sent(3)
    texts = fake_graph.texts()
    assert len(texts) == 3
    assert all(len(t) < 4096 for t in texts)
    assert all(t.endswith(".") for t in texts)
    assert " ".join(texts).replace("  ", " ").strip() == (sentence * 150).strip()


async def test_graph_final_error_marks_failed_with_reason(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    fake_graph.errors.append(GraphFailure(400, 131047, "Re-engagement message",
                                          "more than 24 hours have passed since the customer last replied"))
    await post_webhook(client, text_message("wamid.G1", PHONE, "ciao"))
    await wait_handled(client, 1)
    repos = repos_of(client)

    async def failed() -> Any:
        return await repos.db.fetchrow("SELECT status, error_code, error_reason FROM outbox WHERE status='failed'")


    row = await wait_until(failed, what="failed outbox row")
    assert row["error_code"] == 131047 and "24 hours" in row["error_reason"]
    assert len(fake_graph.attempts) == 1 + len(fake_graph.read_marks) or len(fake_graph.sent) == 0


async def test_graph_transient_errors_are_retried(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    fake_graph.errors.extend([GraphFailure(429, 130429, "Rate limit hit"), GraphFailure(500, 131000, "oops")])
    await post_webhook(client, text_message("wamid.G2", PHONE, "ciao"))
    await fake_graph.wait_for_sent(1)
    assert fake_graph.texts() == ["Echo: ciao"]

    async def sent() -> bool:
        return await repos_of(client).db.fetchval("SELECT status FROM outbox") == "sent"

    await wait_until(sent, what="the outbox row marked sent")
    assert await repos_of(client).db.fetchval("SELECT attempts FROM outbox") == 3


async def test_concurrent_model_calls_are_capped(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    fake_openai.latency = 0.1
    client = await make_client(max_concurrent_ai=2)
    for i in range(6):
        await post_webhook(client, text_message(f"wamid.K{i}", f"3933300{i:05d}", "ciao"))
    await fake_graph.wait_for_sent(6)
    assert fake_openai.max_concurrent_seen <= 2


async def test_outbox_row_exists_before_the_send(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    fake_graph.latency = 0.3
    client = await make_client()
    await post_webhook(client, text_message("wamid.S1", PHONE, "ciao"))
    repos = repos_of(client)

    async def sending() -> Any:
        return await repos.db.fetchval("SELECT status FROM outbox WHERE status = 'sending'")


    assert await wait_until(sending, what="an outbox row in 'sending' while Graph is slow") == "sending"
    await fake_graph.wait_for_sent(1)
    body = orjson.dumps(fake_graph.sent[0])
    assert b"Echo: ciao" in body


async def test_chain_older_than_30_days_is_not_sent(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    import time

    client = await make_client()
    await post_webhook(client, text_message("wamid.OLD1", PHONE, "prima domanda"))
    await fake_graph.wait_for_sent(1)
    await wait_sent(client, 1)
    await repos_of(client).db.execute("UPDATE conversations SET last_response_at = $1", time.time() - 31 * 86400)
    reload_actors(client)  # as after a restart: the actor reads the aged chain
    await post_webhook(client, text_message("wamid.OLD2", PHONE, "seconda domanda"))
    await fake_graph.wait_for_sent(2)
    requests = fake_openai.responses_requests()
    assert len(requests) == 2  # no wasted call with a dead id
    assert not requests[1].get("previous_response_id")


async def test_model_timeouts_are_retried(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    from tests.fakes.openai_server import Hang

    client = await make_client(openai_timeout_seconds=0.3)
    fake_openai.script.extend([Hang(5), Reply("dopo l'attesa")])
    await post_webhook(client, text_message("wamid.TO1", PHONE, "ci sei?"))
    await fake_graph.wait_for_sent(1)
    assert fake_graph.texts() == ["dopo l'attesa"]


async def test_a_turn_whose_messages_were_closed_meanwhile_sends_nothing(make_client: ClientFactory,
                                                                         fake_openai: FakeOpenAI,
                                                                         fake_graph: FakeGraph) -> None:
    # Another process (or a retried write that had committed after all) closed the turn's rows while
    # the model was thinking: the turn's write is fenced, so its reply is never queued nor sent.
    client = await make_client()
    thinking, release = asyncio.Event(), asyncio.Event()

    async def slow(body: dict[str, Any]) -> Reply:
        thinking.set()
        await release.wait()
        return Reply("the answer that must not be sent")

    fake_openai.responder = slow
    await post_webhook(client, text_message("wamid.F1", "393330000101", "hello"))
    await asyncio.wait_for(thinking.wait(), 10)
    closed = await repos_of(client).db.execute("UPDATE inbox SET status = 'done' WHERE wamid = 'wamid.F1'")
    assert closed == 1
    release.set()
    fake_openai.responder = None
    await post_webhook(client, text_message("wamid.F2", "393330000101", "still there?"))
    await wait_handled(client, 2)
    await wait_sent(client, 1)
    assert not [t for t in fake_graph.texts() if "must not be sent" in t]
    assert len(fake_graph.texts()) == 1
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM outbox") == 1  # the next turn's reply only


async def test_a_message_another_process_stored_is_shown_by_the_turn_that_answers_it(
        make_client: ClientFactory, fake_graph: FakeGraph) -> None:
    # With several processes, the ingest of a process that does not run the conversation only inserts
    # (its rows are locked by the owner's turns): the turn that answers writes what the message told.
    client = await make_client()
    now = int(time.time())
    await post_webhook(client, text_message("wamid.O1", "393330009001", "hello", name="Anna",
                                            timestamp=str(now - 10)))
    await wait_handled(client, 1)
    repos = repos_of(client)
    before = await repos.db.fetchrow("SELECT * FROM conversations WHERE customer_id = '393330009001'")
    assert before is not None and before["profile_name"] == "Anna"
    elsewhere = Ingest(db=repos.db, tell=client.app[REGISTRY].tell, owns=lambda _key: False)
    await elsewhere.accept(parse_webhook(text_message("wamid.O2", "393330009001", "it's me again",
                                                      name="Anna Rossi", timestamp=str(now - 5))))
    untouched = await repos.db.fetchrow("SELECT * FROM conversations WHERE customer_id = '393330009001'")
    assert untouched is not None
    assert (untouched["profile_name"], untouched["last_inbound_at"]) == ("Anna", before["last_inbound_at"])
    await wait_handled(client, 2)
    await fake_graph.wait_until(lambda: len(fake_graph.texts_to("393330009001")) == 2, what="two replies")
    after = await repos.db.fetchrow("SELECT * FROM conversations WHERE customer_id = '393330009001'")
    assert after is not None and after["profile_name"] == "Anna Rossi"
    assert after["last_inbound_at"] == before["last_inbound_at"] + 5
    assert after["last_activity_at"] >= after["last_inbound_at"]
    contact = await repos.db.fetchrow("SELECT name, wa_id FROM contacts WHERE customer_id = '393330009001'")
    assert contact is not None and (contact["name"], contact["wa_id"]) == ("Anna Rossi", "393330009001")
