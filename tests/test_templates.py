"""The templates catalogue: full sync from the fake Graph API into SQLite, status webhooks, building sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from bot.configuration.config import Config
from bot.persistence.database import Database
from bot.persistence.templates import TemplateRepo
from bot.whatsapp.client import GraphError, Recipient, WhatsAppClient
from bot.whatsapp.events import TemplateStatusUpdate, parse_webhook
from bot.whatsapp.template_sync import TemplateSync
from bot.whatsapp.templates import (
    Template,
    TemplateError,
    TemplateSyncError,
    apply_status_update,
    build_components,
    prepare_send,
    preview,
    sync,
    template_from_graph,
)
from tests.backend import database_url_for
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import PHONE_NUMBER_ID, WABA_ID, load_sample_json
from tests.helpers import wait_until

TOKEN = "wa-test-token"


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[TemplateRepo]:
    """The templates repository on a fresh SQLite database."""
    db = Database.create(database_url_for(tmp_path / "data"))
    await db.open()
    try:
        yield TemplateRepo(db)
    finally:
        await db.close()


@pytest.fixture
async def client(fake_graph: FakeGraph) -> AsyncIterator[WhatsAppClient]:
    """A Graph client pointed at the fake."""
    async with aiohttp.ClientSession() as session:
        yield WhatsAppClient(session=session, api_base=fake_graph.base_url, access_token=TOKEN, send_rate=80,
                             timeout=5)


def catalogue(fake_graph: FakeGraph) -> None:
    fake_graph.waba_id = WABA_ID
    fake_graph.templates_page_size = 2
    fake_graph.add_template("order_ready", "it", "Ciao {{1}}, il tuo ordine {{2}} è pronto.", status="PENDING",
                            footer="Bottega Test")
    fake_graph.add_template("welcome", "en_US", "Hi {{first_name}}, welcome to {{shop}}!", category="MARKETING")
    fake_graph.add_template("spring_promo", "en_US", "Spring sale!", status="REJECTED", category="MARKETING")


async def test_a_full_sync_stores_every_page(repo: TemplateRepo, client: WhatsAppClient,
                                             fake_graph: FakeGraph) -> None:
    catalogue(fake_graph)
    assert await sync(source=client, store=repo, waba_id=WABA_ID) == 3
    stored = {(t.name, t.language): t for t in await repo.all()}
    assert set(stored) == {("order_ready", "it"), ("welcome", "en_US"), ("spring_promo", "en_US")}
    order = stored[("order_ready", "it")]
    assert (order.status, order.category, order.parameter_count) == ("PENDING", "UTILITY", 2)
    assert order.body_text == "Ciao {{1}}, il tuo ordine {{2}} è pronto."
    assert order.template_id == fake_graph.templates[0]["id"] and order.waba_id == WABA_ID
    assert orjson.loads(order.components_json) == fake_graph.templates[0]["components"]
    assert stored[("welcome", "en_US")].parameter_count == 2


async def test_a_sync_replaces_the_set(repo: TemplateRepo, client: WhatsAppClient, fake_graph: FakeGraph) -> None:
    catalogue(fake_graph)
    await sync(source=client, store=repo, waba_id=WABA_ID)
    fake_graph.templates = [t for t in fake_graph.templates if t["name"] != "spring_promo"]
    fake_graph.add_template("summer_promo", "it", "Saldi estivi!")
    assert await sync(source=client, store=repo, waba_id=WABA_ID) == 3
    assert [t.name for t in await repo.all()] == ["order_ready", "summer_promo", "welcome"]


async def test_sync_needs_the_waba_id_and_the_token(repo: TemplateRepo, client: WhatsAppClient,
                                                    fake_graph: FakeGraph) -> None:
    with pytest.raises(TemplateSyncError, match="WHATSAPP_BUSINESS_ACCOUNT_ID is not set"):
        await sync(source=client, store=repo, waba_id=Config().whatsapp_business_account_id)
    with pytest.raises(TemplateSyncError, match="numeric"):
        await sync(source=client, store=repo, waba_id="../me")
    async with aiohttp.ClientSession() as session:
        tokenless = WhatsAppClient(session=session, api_base=fake_graph.base_url, access_token="", send_rate=1,
                                   timeout=5)
        with pytest.raises(TemplateSyncError, match="WHATSAPP_ACCESS_TOKEN"):
            await sync(source=tokenless, store=repo, waba_id=WABA_ID)
    assert fake_graph.requests == []


async def test_a_failed_fetch_keeps_the_stored_set(repo: TemplateRepo, client: WhatsAppClient,
                                                   fake_graph: FakeGraph) -> None:
    catalogue(fake_graph)
    await sync(source=client, store=repo, waba_id=WABA_ID)
    fake_graph.expected_token = "rotated"
    with pytest.raises(GraphError) as err:
        await sync(source=client, store=repo, waba_id=WABA_ID)
    assert err.value.code == 190
    assert len(await repo.all()) == 3


def test_waba_id_comes_from_the_environment() -> None:
    config = Config.from_env({"WHATSAPP_BUSINESS_ACCOUNT_ID": "100000000000000"})
    assert config.whatsapp_business_account_id == "100000000000000"
    assert Config.from_env({}).whatsapp_business_account_id == ""


async def test_status_webhooks_update_the_catalogue(repo: TemplateRepo, client: WhatsAppClient,
                                                    fake_graph: FakeGraph) -> None:
    catalogue(fake_graph)
    fake_graph.templates[0]["id"] = "1000000000000101"  # the id in the approval sample
    await sync(source=client, store=repo, waba_id=WABA_ID)
    approved = parse_webhook(load_sample_json("template_status_approved")).template_updates[0]
    assert await apply_status_update(repo, approved)
    order = await repo.get("order_ready", "it")
    assert order is not None and (order.status, order.reason) == ("APPROVED", None)
    # By name and language when Meta's id is not the stored one.
    rejected = TemplateStatusUpdate(WABA_ID, "555", "welcome", "en_US", "REJECTED", "INVALID_FORMAT")
    assert await apply_status_update(repo, rejected)
    welcome = await repo.get("welcome", "en_US")
    assert welcome is not None and (welcome.status, welcome.reason) == ("REJECTED", "INVALID_FORMAT")
    reinstated = TemplateStatusUpdate(WABA_ID, None, "welcome", "en_US", "REINSTATED", None)
    assert await apply_status_update(repo, reinstated)
    welcome = await repo.get("welcome", "en_US")
    assert welcome is not None and welcome.status == "APPROVED"
    unknown = TemplateStatusUpdate(WABA_ID, "777", "never_synced", "it", "APPROVED", None)
    assert not await apply_status_update(repo, unknown)


async def test_a_stored_template_is_sent_and_meta_accepts_it(repo: TemplateRepo, client: WhatsAppClient,
                                                             fake_graph: FakeGraph) -> None:
    catalogue(fake_graph)
    fake_graph.templates[0]["status"] = "APPROVED"
    await sync(source=client, store=repo, waba_id=WABA_ID)
    stored = await repo.get("order_ready", "it")
    assert stored is not None
    prepared = prepare_send(stored, ["Giulia", "A-1042"])
    assert prepared.components == [{"type": "body", "parameters": [{"type": "text", "text": "Giulia"},
                                                                   {"type": "text", "text": "A-1042"}]}]
    assert prepared.preview == "Ciao Giulia, il tuo ordine A-1042 è pronto.\n\nBottega Test"
    wamid = await client.send_template(PHONE_NUMBER_ID, Recipient("393330000000", None), prepared.name,
                                       prepared.language, prepared.components)
    assert fake_graph.templates_sent() == [{"name": "order_ready", "language": {"code": "it"},
                                            "components": prepared.components}]
    assert wamid.startswith("wamid.")


async def test_named_parameters_are_sent_with_their_names(repo: TemplateRepo, client: WhatsAppClient,
                                                          fake_graph: FakeGraph) -> None:
    catalogue(fake_graph)
    await sync(source=client, store=repo, waba_id=WABA_ID)
    welcome = await repo.get("welcome", "en_US")
    assert welcome is not None
    assert build_components(welcome, ["Ann", "Bottega"]) == [{"type": "body", "parameters": [
        {"type": "text", "parameter_name": "first_name", "text": "Ann"},
        {"type": "text", "parameter_name": "shop", "text": "Bottega"}]}]
    assert preview(welcome, ["Ann", "Bottega"]) == "Hi Ann, welcome to Bottega!"


def graph_template(body: str, *, status: str = "APPROVED", extra: list[dict[str, object]] | None = None) -> Template:
    item = {"name": "t", "language": "it", "status": status, "category": "UTILITY", "id": "1",
            "components": [*(extra or []), {"type": "BODY", "text": body}]}
    template = template_from_graph(item)
    assert template is not None
    return template


def test_numbered_variables_follow_their_numbers_not_their_place() -> None:
    template = graph_template("Il {{2}} per {{1}}")
    assert build_components(template, ["Ann", "lunedì"])[0]["parameters"] == [
        {"type": "text", "text": "Ann"}, {"type": "text", "text": "lunedì"}]
    assert preview(template, ["Ann", "lunedì"]) == "Il lunedì per Ann"


@pytest.mark.parametrize("template, parameters, message", [
    (graph_template("Ciao {{1}}"), [], "takes 1 parameter, got 0"),
    (graph_template("Ciao"), ["x"], "takes 0 parameters, got 1"),
    (graph_template("Ciao {{1}}"), ["  "], "non-empty"),
    (graph_template("Ciao {{1}}"), ["a\nb"], "newline"),
    (graph_template("Ciao {{1}}"), [5], "non-empty text"),
    (graph_template("Ciao {{1}}", status="REJECTED"), ["x"], "REJECTED: only APPROVED"),
    (graph_template("Ciao {{1}}", extra=[{"type": "HEADER", "format": "TEXT", "text": "Per {{1}}"}]), ["x"],
     "variables in its header"),
    (graph_template("Ciao {{1}}", extra=[{"type": "HEADER", "format": "IMAGE"}]), ["x"], "image header"),
    (graph_template("Ciao {{1}}", extra=[{"type": "BUTTONS", "buttons": [
        {"type": "URL", "text": "Track", "url": "https://example.com/t/{{1}}"}]}]), ["x"], "variable URL"),
    (graph_template("{{1}}"), ["x" * 1025], "WhatsApp allows 1024"),
])
def test_sends_that_cannot_work_say_why(template: Template, parameters: list[object], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        prepare_send(template, parameters)


def test_a_template_without_variables_has_no_components() -> None:
    prepared = prepare_send(graph_template("Grazie!", extra=[{"type": "HEADER", "format": "TEXT", "text": "Ciao"}]),
                            [])
    assert prepared.components == [] and prepared.preview == "Ciao\n\nGrazie!"


async def test_metas_list_sample_syncs(repo: TemplateRepo, client: WhatsAppClient, fake_graph: FakeGraph) -> None:
    fake_graph.templates = load_sample_json("templates_list_response")["data"]
    assert await sync(source=client, store=repo, waba_id=WABA_ID) == 2
    hello = await repo.get("hello_world", "en_US")
    assert hello is not None and hello.parameter_count == 0 and hello.template_id == "1000000000000100"
    prepared = prepare_send(hello, [])
    assert prepared.components == []
    assert prepared.preview.startswith("Hello World\n\nWelcome and congratulations!!")
    assert prepared.preview.endswith("WhatsApp Business Platform sample message")
    order = await repo.get("order_ready", "it")
    assert order is not None and order.parameter_count == 2 and order.category == "UTILITY"


async def test_the_sync_job_runs_again_at_its_interval(repo: TemplateRepo, client: WhatsAppClient,
                                                       fake_graph: FakeGraph) -> None:
    catalogue(fake_graph)
    job = TemplateSync(source=client, store=repo, waba_id=WABA_ID, interval_seconds=0.2)  # an hour, shortened
    job.start()
    try:
        await wait_until(lambda: _has(repo, "welcome"), what="the sync at start")
        fake_graph.add_template("summer_promo", "it", "Saldi estivi!")  # approved in WhatsApp Manager meanwhile
        await wait_until(lambda: _has(repo, "summer_promo"), what="the next scheduled sync")
    finally:
        await job.stop()


async def _has(repo: TemplateRepo, name: str) -> bool:
    return any(t.name == name for t in await repo.all())
