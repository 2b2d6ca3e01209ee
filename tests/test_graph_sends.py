"""The Graph client's interactive and template sends and template list, against the fake Graph API."""

from __future__ import annotations

import time
import types
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest

import bot.whatsapp.client as client_module
from bot.whatsapp.client import GraphError, Recipient, WhatsAppClient
from bot.whatsapp.interactive import render_choices
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import PHONE_NUMBER_ID, load_sample_json

# Nothing here opens a database: the PostgreSQL half of the suite leaves these to the SQLite half.
pytestmark = pytest.mark.no_database

CUSTOMER = Recipient("393330000000", "IT.1000000000000000001")
TOKEN = "wa-test-token"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session for the client."""
    async with aiohttp.ClientSession() as session:
        yield session


def make_client(http: aiohttp.ClientSession, fake_graph: FakeGraph, *, send_rate: float = 80.0) -> WhatsAppClient:
    return WhatsAppClient(session=http, api_base=fake_graph.base_url, access_token=TOKEN, send_rate=send_rate,
                          timeout=5)


def as_sent(sample: str, wamid: str) -> dict[str, Any]:
    return {**load_sample_json(sample), "phone_number_id": PHONE_NUMBER_ID, "wamid": wamid}


async def test_reply_buttons_go_out_in_metas_shape(http: aiohttp.ClientSession, fake_graph: FakeGraph) -> None:
    rendered = render_choices("Confermi l'ordine?", [{"id": "confirm-order", "title": "Conferma"},
                                                    {"id": "cancel-order", "title": "Annulla"}])
    assert rendered.interactive is not None
    wamid = await make_client(http, fake_graph).send_interactive(PHONE_NUMBER_ID, CUSTOMER, rendered.interactive)
    assert wamid == "wamid.FAKE_OUT_1"
    assert fake_graph.sent == [as_sent("send_interactive_buttons_request", wamid)]
    interactive = fake_graph.interactives()[0]
    assert interactive["type"] == "button"
    assert [b["reply"]["id"] for b in interactive["action"]["buttons"]] == ["confirm-order", "cancel-order"]


async def test_a_list_goes_out_in_metas_shape(http: aiohttp.ClientSession, fake_graph: FakeGraph) -> None:
    rendered = render_choices("Quale borsa preferisci?", [
        {"id": "product-sku-001", "title": "Borsa rossa", "description": "Pelle, 30 cm"},
        {"id": "product-sku-002", "title": "Borsa nera", "description": "Tela, 40 cm"},
    ], language="it")
    assert rendered.kind == "list" and rendered.interactive is not None
    wamid = await make_client(http, fake_graph).send_interactive(PHONE_NUMBER_ID, CUSTOMER, rendered.interactive)
    assert fake_graph.sent == [as_sent("send_interactive_list_request", wamid)]
    assert fake_graph.interactives()[0]["type"] == "list"


async def test_a_template_goes_out_in_metas_shape(http: aiohttp.ClientSession, fake_graph: FakeGraph) -> None:
    fake_graph.add_template("order_ready", "it", "Ciao {{1}}, il tuo ordine {{2}} è pronto.")
    components = [{"type": "body", "parameters": [{"type": "text", "text": "Test User"},
                                                  {"type": "text", "text": "A-1042"}]}]
    wamid = await make_client(http, fake_graph).send_template(PHONE_NUMBER_ID, CUSTOMER, "order_ready", "it",
                                                              components)
    assert fake_graph.sent == [as_sent("send_template_request", wamid)]
    template = fake_graph.templates_sent()[0]
    assert (template["name"], template["language"]["code"]) == ("order_ready", "it")
    assert template["components"][0]["type"] == "body"


@pytest.mark.parametrize("interactive, code", [
    ({"type": "button", "body": {"text": "?"}, "action": {"buttons": [
        {"type": "reply", "reply": {"id": str(n), "title": f"T{n}"}} for n in range(4)]}}, 131009),
    ({"type": "button", "body": {"text": "?"}, "action": {"buttons": [
        {"type": "reply", "reply": {"id": "a", "title": "x" * 21}}]}}, 131009),
    ({"type": "button", "body": {"text": "?"}, "action": {"buttons": [{"id": "a", "title": "A"}]}}, 100),
    ({"type": "button", "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "A"}}]}}, 100),
    ({"type": "list", "body": {"text": "?"}, "action": {"sections": [{"rows": [{"id": "a", "title": "A"}]}]}}, 100),
    ({"type": "list", "body": {"text": "?"}, "action": {"button": "Go", "sections": [
        {"rows": [{"id": str(n), "title": f"R{n}"} for n in range(11)]}]}}, 131009),
    ({"type": "list", "body": {"text": "?"}, "action": {"button": "Go", "sections": [
        {"rows": [{"id": "a", "title": "A", "description": "d" * 73}]}]}}, 131009),
    ({"type": "carousel", "body": {"text": "?"}}, 100),
])
async def test_malformed_interactive_bodies_are_refused(http: aiohttp.ClientSession, fake_graph: FakeGraph,
                                                        interactive: dict[str, Any], code: int) -> None:
    with pytest.raises(GraphError) as err:
        await make_client(http, fake_graph).send_interactive(PHONE_NUMBER_ID, CUSTOMER, interactive)
    assert err.value.code == code and not err.value.retryable
    assert fake_graph.sent == []


async def test_template_sends_meta_would_refuse(http: aiohttp.ClientSession, fake_graph: FakeGraph) -> None:
    fake_graph.add_template("order_ready", "it", "Ciao {{1}}, il tuo ordine {{2}} è pronto.")
    fake_graph.add_template("promo", "it", "Offerta!", status="PAUSED")
    client = make_client(http, fake_graph)
    one = [{"type": "body", "parameters": [{"type": "text", "text": "Test User"}]}]
    cases: list[tuple[str, str, list[dict[str, Any]], int]] = [
        ("order_ready", "it", one, 132000),
        ("order_ready", "en", one, 132001),
        ("promo", "it", [], 132015),
        ("order_ready", "it", [{"type": "body", "parameters": [{"type": "text"}]}], 100),
    ]
    for name, language, components, code in cases:
        with pytest.raises(GraphError) as err:
            await client.send_template(PHONE_NUMBER_ID, CUSTOMER, name, language, components)
        assert err.value.code == code, (name, language)
    assert fake_graph.sent == []


async def test_templates_list_follows_every_page(http: aiohttp.ClientSession, fake_graph: FakeGraph) -> None:
    for n in range(5):
        fake_graph.add_template(f"t{n}", "it", f"Testo {n} {{{{1}}}}")
    fake_graph.templates_page_size = 2
    fake_graph.waba_id = "100000000000000"
    listed = await make_client(http, fake_graph).list_templates("100000000000000", page_size=50)
    assert [t["name"] for t in listed] == ["t0", "t1", "t2", "t3", "t4"]
    assert set(listed[0]) == {"name", "language", "status", "category", "components", "id"}
    pages = [r for r in fake_graph.requests if r.path.endswith("/message_templates")]
    assert len(pages) == 3
    assert "after=" not in pages[0].query_string and all("after=" in p.query_string for p in pages[1:])
    queries = [parse_qs(p.query_string) for p in pages]
    assert all(q["fields"] == ["name,language,status,category,components"] and q["limit"] == ["50"] for q in queries)
    assert all(p.header("Authorization") == f"Bearer {TOKEN}" for p in pages)


async def test_templates_list_of_an_unknown_waba_is_a_graph_error(http: aiohttp.ClientSession,
                                                                  fake_graph: FakeGraph) -> None:
    fake_graph.waba_id = "100000000000000"
    with pytest.raises(GraphError) as err:
        await make_client(http, fake_graph).list_templates("999")
    assert err.value.code == 100 and err.value.http_status == 404


async def test_every_kind_of_send_shares_one_rate_limit(http: aiohttp.ClientSession, fake_graph: FakeGraph,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The bucket's clock stands still, so no token comes back while the burst is sent: only a shared
    # bucket makes the eleventh send wait (1 / rate seconds), whatever kind each send is.
    monkeypatch.setattr(client_module, "time", types.SimpleNamespace(monotonic=lambda: 1000.0))
    fake_graph.add_template("hello", "en", "Hello")
    client = make_client(http, fake_graph, send_rate=10)
    buttons = render_choices("?", [{"id": "y", "title": "Yes"}]).interactive
    assert buttons is not None
    for n in range(10):
        match n % 3:
            case 0:
                await client.send_text(PHONE_NUMBER_ID, CUSTOMER, "hi")
            case 1:
                await client.send_interactive(PHONE_NUMBER_ID, CUSTOMER, buttons)
            case _:
                await client.send_template(PHONE_NUMBER_ID, CUSTOMER, "hello", "en", [])
    started = time.perf_counter()
    await client.send_interactive(PHONE_NUMBER_ID, CUSTOMER, buttons)
    assert time.perf_counter() - started >= 0.09
    assert len(fake_graph.sent) == 11
