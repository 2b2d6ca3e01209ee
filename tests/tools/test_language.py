"""The customer's language: short messages never change it, a long message in another language does."""

from __future__ import annotations

import pytest

from bot.ai.language import detect_language
from tests.conftest import ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import text_message
from tests.helpers import repos_of, wait_handled

PHONE = "393334445555"
SHORT = ["ok", "👍", "grazie!", "si", "OK!!", "va bene"]


@pytest.mark.parametrize("text", SHORT)
def test_short_messages_are_not_judged(text: str) -> None:
    assert detect_language(text) is None


def test_long_messages_are() -> None:
    assert detect_language("Buongiorno, vorrei sapere se avete ancora il pane integrale") == "it"
    assert detect_language("Hello, could you tell me when the shop opens tomorrow morning?") == "en"


async def test_stored_language_follows_long_messages_only(make_client: ClientFactory, fake_graph: FakeGraph) -> None:
    client = await make_client()
    repos = repos_of(client)
    sent = 0

    async def say(text: str) -> tuple[str | None, str | None]:
        nonlocal sent
        sent += 1
        await post_webhook(client, text_message(f"wamid.LANG{sent}", PHONE, text))
        await wait_handled(client, sent)
        conv = await repos.conversations.find(PHONE)
        assert conv is not None
        contact = await repos.contacts.for_conversation(conv.phone_number_id, conv.customer_id)
        assert contact is not None
        return conv.language, contact.language

    assert await say("Buongiorno, vorrei sapere se avete ancora il pane integrale") == ("it", "it")
    for text in SHORT:
        assert await say(text) == ("it", "it"), text
    assert await say("Hello, could you tell me when the shop opens tomorrow morning?") == ("en", "en")
    assert await say("ok") == ("en", "en")
    await fake_graph.wait_for_sent(sent)
