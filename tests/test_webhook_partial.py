"""The webhook keeps what it can read of a POST: a malformed change costs only itself."""

from __future__ import annotations

import structlog
from aiohttp.test_utils import TestClient

from tests.conftest import post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import load_sample
from tests.helpers import inbox_statuses, wait_handled


async def test_a_change_without_metadata_does_not_lose_the_valid_message(client: TestClient) -> None:
    resp = await post_webhook(client, load_sample("mixed_missing_metadata"))
    assert resp.status == 200, await resp.text()
    stored = await inbox_statuses(client)
    assert "wamid.TEST_IN_MIXED_0001" in stored
    assert "wamid.TEST_IN_MIXED_0002" not in stored


async def test_a_template_status_update_alone_is_acknowledged(client: TestClient) -> None:
    resp = await post_webhook(client, load_sample("template_status_approved"))
    assert resp.status == 200, await resp.text()
    assert await inbox_statuses(client) == {}


async def test_a_sender_only_in_contacts_is_stored(client: TestClient) -> None:
    resp = await post_webhook(client, load_sample("text_contact_user_id_only"))
    assert resp.status == 200, await resp.text()
    assert "wamid.TEST_IN_BSUID_0002" in await inbox_statuses(client)


async def test_the_valid_half_of_a_mixed_post_is_answered_and_the_rest_logged_with_why(
    client: TestClient, fake_graph: FakeGraph
) -> None:
    with structlog.testing.capture_logs() as logs:
        resp = await post_webhook(client, load_sample("mixed_missing_metadata"))
    assert resp.status == 200
    skipped = [e for e in logs if e["event"] == "webhook_items_skipped"]
    assert len(skipped) == 1 and skipped[0]["count"] == 1
    assert "metadata" in str(skipped[0]["skipped"])  # which item, and why
    await wait_handled(client, 1)
    assert len(fake_graph.texts()) == 1 and fake_graph.texts()[0].startswith("Echo: ")


async def test_a_sender_only_in_contacts_gets_an_answer(client: TestClient, fake_graph: FakeGraph) -> None:
    assert (await post_webhook(client, load_sample("text_contact_user_id_only"))).status == 200
    await wait_handled(client, 1)
    [sent] = fake_graph.sent
    assert sent.get("recipient") or sent.get("to")  # addressed by the id Meta gave (the BSUID)
