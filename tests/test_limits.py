"""Limits and costs: a customer's flood, another bot on the line, the cost ledger and the monthly budget."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from aiohttp.test_utils import TestClient

from bot.persistence.usage import day_of
from bot.texts import TEXTS
from bot.web.keys import CONFIG, COSTS
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import text_message
from tests.fakes.openai_server import CallTools, FakeOpenAI, Hang, input_text
from tests.helpers import repos_of, wait_conversation, wait_handled, wait_sent
from tests.web.helpers import admin, post_form

FLOODER, OTHER = "393339990000", "393338880000"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_one_customers_flood_costs_a_handful_of_calls_and_one_notice(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    fake_openai.latency = 0.05
    started = time.monotonic()
    flood = [post_webhook(client, text_message(f"wamid.F{i}", FLOODER, f"spam {i} " + "x" * 4000)) for i in range(300)]
    other = asyncio.create_task(post_webhook(client, text_message("wamid.OK", OTHER, "Buongiorno, siete aperti oggi?")))
    assert {r.status for r in await asyncio.gather(*flood)} == {200}
    assert (await other).status == 200
    statuses = await wait_handled(client, 301, timeout=60)
    assert time.monotonic() - started < 30
    calls = [r for r in fake_openai.responses_requests() if FLOODER not in str(r)]  # the guard: never the number
    flooder_calls = len(calls) - 1
    assert flooder_calls <= 5, flooder_calls
    for request in fake_openai.responses_requests():  # one turn takes at most 8,000 characters of customer text
        assert len(str(request["input"])) < 9_000
    to_flooder = [m for m in fake_graph.sent if m["to"] == FLOODER]
    notices = [m for m in to_flooder if "received them all" in m["text"]["body"]]
    assert len(notices) == 1 and len(to_flooder) == flooder_calls + 1
    assert [m["text"]["body"] for m in fake_graph.sent if m["to"] == OTHER] == ["Echo: Buongiorno, siete aperti oggi?"]
    assert statuses["wamid.OK"] == "done"
    assert sum(1 for s in statuses.values() if s == "ignored") >= 250  # stored and shown, not answered
    conv = await wait_conversation(client, lambda c: c.flag == "rate_limited", "the flag", FLOODER)
    assert conv.flag_at is not None
    listed = await (await client.get("/api/conversations", headers=BEARER)).json()
    assert any(c["flag"] == "rate_limited" for c in listed["conversations"])


async def test_another_bot_on_the_line_pauses_the_ai(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    # An auto-responder: the same text, answering each of our replies at once.
    auto = "Thank you for your message! We will reply soon."
    for i in range(8):
        await post_webhook(client, text_message(f"wamid.L{i}", FLOODER, auto))
        await wait_handled(client, i + 1)
    conv = await wait_conversation(client, lambda c: c.flag == "loop", "the loop flag", FLOODER)
    assert conv.paused and conv.paused_until is None
    answered = len(fake_openai.responses_requests())
    assert answered <= 5
    await post_webhook(client, text_message("wamid.L9", FLOODER, auto))
    await wait_handled(client, 9)
    assert len(fake_openai.responses_requests()) == answered  # paused: no more model calls


async def test_a_sender_that_always_answers_within_two_seconds_pauses_the_ai(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    # Another bot that words every answer differently, but answers each of our replies at once.
    client = await make_client(customer_turns_per_hour=0)
    for i in range(14):
        await post_webhook(client, text_message(f"wamid.LF{i}", FLOODER, f"Automatic answer number {i}: noted"))
        await wait_handled(client, i + 1)
        await wait_sent(client, min(i + 1, 10))
    conv = await wait_conversation(client, lambda c: c.flag == "loop", "the loop flag", FLOODER)
    assert conv.paused and conv.paused_until is None
    # Ten fast answers in a row: the eleventh message is not answered, nor anything after it.
    assert len(fake_openai.responses_requests()) == 10


async def test_every_call_is_in_the_ledger_and_the_budget_stops_the_model(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client(monthly_budget=0.00001)
    repos = repos_of(client)
    await post_webhook(client, text_message("wamid.B1", FLOODER, "Hello, how much is the red leather bag?"))
    await wait_handled(client, 1)
    row = await repos.db.fetchrow("SELECT * FROM usage_ledger")
    assert row is not None and row["day"] == day_of(time.time()) and row["model"] == "gpt-4o-mini"
    assert row["customer_id"] == FLOODER and row["calls"] == 1 and row["input_tokens"] > 0 and row["cost"] > 0
    costs = client.app[COSTS]  # type: ignore[index]
    assert costs.month >= row["cost"] and costs.over(0.00001)
    # The budget is reached: no more model calls; the customer hears a person will answer, once.
    for i in range(2):
        await post_webhook(client, text_message(f"wamid.B{i + 2}", FLOODER, "And how much is the blue one, please?"))
        await wait_handled(client, i + 2)
    assert len(fake_openai.responses_requests()) == 1
    texts = [m["text"]["body"] for m in fake_graph.sent]
    assert len(texts) == 2 and "a person will answer" in texts[1]
    conv = await wait_conversation(client, lambda c: c.flag == "budget", "the budget flag", FLOODER)
    assert conv.needs_human
    await admin(client)
    inbox = await (await client.get("/inbox")).text()
    assert "monthly budget" in inbox.lower()
    data = await (await client.get("/api/diagnostics")).json()
    assert data["costs"]["budget_reached"] is True and data["costs"]["month"] >= round(row["cost"], 6)
    metrics = await (await client.get("/metrics", headers=BEARER)).text()
    assert 'bot_model_spend{period="month"}' in metrics and "bot_model_tokens_total" in metrics


async def test_the_settings_page_sets_the_budget_prices_and_opening_hours(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    csrf = await admin(client)
    page = await (await client.get("/settings")).text()
    assert "Limits, costs and opening hours" in page and "gpt-4o-mini" in page
    bad = await post_form(client, "/settings/business", csrf, monthly_budget="lots",
                          opening_hours="mon-fri 9-25", time_zone="Mars/Olympus")
    assert bad.status == 400
    text = await bad.text()
    assert "Write a number" in text and "business hours" in text.lower()
    ok = await post_form(client, "/settings/business", csrf, monthly_budget="12,5",
                         opening_hours="mon-sun 00:00-23:59", time_zone="Europe/Rome",
                         window_template="order_update:it")
    assert ok.status == 303
    saved = await repos_of(client).business.get()
    assert saved.monthly_budget == 12.5 and saved.time_zone == "Europe/Rome"
    assert (saved.window_template, saved.window_template_language) == ("order_update", "it")
    price = await post_form(client, "/settings/prices", csrf, model="my-model", input_per_million="1",
                            cached_per_million="0.5", output_per_million="4")
    assert price.status == 303
    costs = client.app[COSTS]  # type: ignore[index]
    assert costs.price("my-model") is not None and costs.price("my-model").output_per_million == 4
    # Always open: the hand-off text now says a person answers shortly, in the customer's language.
    await post_webhook(client, text_message("wamid.H1", OTHER, "Hello, I would like to talk to a real person please"))
    await wait_handled(client, 1)
    assert "shortly" in fake_graph.texts()[-1]
    audit = await repos_of(client).audit.recent(action="business_settings_saved")
    assert audit and audit[0]["username"] == "admin"


async def test_the_hourly_limit_holds_for_the_rest_of_the_hour_then_lifts(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client(customer_turns_per_hour=3)
    customer = "393337770000"
    for n in range(1, 6):  # at a person's pace: one message, one answer
        await post_webhook(client, text_message(f"wamid.HL{n}", customer, f"Hello, question number {n}, thanks"))
        await wait_handled(client, n)
    # Three turns, then one polite notice in the customer's language, then silence (no calls, no texts).
    assert len(fake_openai.responses_requests()) == 3
    texts = fake_graph.texts_to(customer)
    assert len(texts) == 4 and texts[3] == TEXTS["rate_limited"]["en"]
    conv = await wait_conversation(client, lambda c: c.flag == "rate_limited", "the flag", customer)
    assert conv.rate_window_start is not None
    # An operator hands the conversation back: the limit is lifted, and the AI answers at once.
    assert (await client.post(f"/api/conversations/{customer}/resume", headers=BEARER)).status == 200
    await wait_conversation(client, lambda c: c.flag is None, "the hand-back", customer)
    await post_webhook(client, text_message("wamid.HL5b", customer, "Hello, after the hand-back"))
    await wait_handled(client, 6)
    assert fake_graph.texts_to(customer)[-1] == "Echo: Hello, after the hand-back"
    for n in (7, 8, 9):  # two more turns, and the limit of 3 an hour is reached again
        await post_webhook(client, text_message(f"wamid.HL5{n}", customer, f"Hello, question {n} after it"))
        await wait_handled(client, n)
    assert fake_graph.texts_to(customer)[-1] == TEXTS["rate_limited"]["en"]
    # An hour later the window starts afresh: answered again, and the flag is gone.
    # (A restart stands in for the hour: the minute's arrivals, kept in memory, are gone too.)
    await repos_of(client).db.execute("UPDATE conversations SET rate_window_start = $1", time.time() - 3601)
    await client.close()
    later = await make_client(customer_turns_per_hour=3)
    await post_webhook(later, text_message("wamid.HL6", customer, "Hello again, one more question"))
    await wait_handled(later, 10)
    assert len(fake_openai.responses_requests()) == 7
    assert fake_graph.texts_to(customer)[-1] == "Echo: Hello again, one more question"
    await wait_conversation(later, lambda c: c.flag is None, "the flag cleared", customer)


async def test_a_turn_takes_at_most_30_messages_and_the_rest_follow_in_order(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client = await make_client()
    thinking, release = asyncio.Event(), asyncio.Event()

    async def slow_first(body: dict[str, Any]) -> None:
        if not thinking.is_set():
            thinking.set()
            await release.wait()
        return None  # the fake's echo

    fake_openai.responder = slow_first
    customer = "393336660000"
    await post_webhook(client, text_message("wamid.CAP0", customer, "first"))
    await asyncio.wait_for(thinking.wait(), 10)
    for n in range(1, 41):  # 40 more while the first turn is thinking
        await post_webhook(client, text_message(f"wamid.CAP{n}", customer, f"line {n}"))
    release.set()
    await wait_handled(client, 41)
    turns = [input_text(r) for r in fake_openai.responses_requests()]
    assert len(turns) == 3
    assert [t.count("line ") for t in turns] == [0, 30, 10]
    mentioned = [int(n) for t in turns[1:] for n in re.findall(r"line (\d+)", t)]
    assert mentioned == list(range(1, 41))  # every message once, in the order they came


async def test_the_ai_can_leave_opening_hours_to_the_team(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    # Open every day, around the clock, with "the AI answers only outside opening hours": the team has it.
    client = await make_client(opening_hours="mon-sun 00:00-24:00", time_zone="UTC", ai_outside_hours_only=True)
    await post_webhook(client, text_message("wamid.OH1", OTHER, "Buongiorno, siete aperti?"))
    statuses = await wait_handled(client, 1)
    assert statuses == {"wamid.OH1": "ignored"}
    assert fake_openai.responses_requests() == [] and fake_graph.texts_to(OTHER) == []
    conv = await wait_conversation(client, lambda c: c.needs_human, "the hand-over to the team", OTHER)
    assert conv.needs_human
    # The same hours without the option: the AI answers as usual.
    again = await make_client(opening_hours="mon-sun 00:00-24:00", time_zone="UTC", ai_outside_hours_only=False,
                              data_dir=client.app[CONFIG].data_dir.parent / "other")  # type: ignore[index]
    await post_webhook(again, text_message("wamid.OH2", OTHER, "Buongiorno, siete aperti?"))
    await wait_handled(again, 1)
    assert fake_graph.texts_to(OTHER) == ["Echo: Buongiorno, siete aperti?"]


async def test_calls_made_before_a_person_steps_in_are_in_the_ledger(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    # The model asks for a tool (one billed response), then thinks long about the answer: an operator
    # steps in meanwhile, the draft is dropped, and the first response is still counted.
    fake_openai.script.extend([CallTools([("search_products", {"query": "pane", "limit": 3})]), Hang(20.0)])
    await post_webhook(client, text_message("wamid.LG1", OTHER, "Avete il pane?"))
    await fake_openai.wait_for_requests(2)
    resp = await client.post(f"/api/conversations/{OTHER}/messages", json={"text": "Sì, ci penso io"},
                             headers=BEARER)
    assert resp.status == 202
    await wait_handled(client, 1)
    row = await repos_of(client).db.fetchrow(
        "SELECT SUM(calls) AS calls, SUM(input_tokens) AS input_tokens FROM usage_ledger")
    assert row is not None and row["calls"] == 1 and row["input_tokens"] > 0
