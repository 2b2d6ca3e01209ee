"""Limits and costs: a customer's flood, another bot on the line, the cost ledger and the monthly budget."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient

from bot.persistence.usage import day_of
from bot.web.keys import COSTS
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import text_message
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import repos_of, wait_conversation, wait_handled
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
