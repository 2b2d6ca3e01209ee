"""The AI Assistant Settings page and /api/settings: round trip, validation, the write-only key, test connection."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet

from bot.ai.clients import ClientPool
from bot.ai.engine import MAX_CLIENTS
from bot.configuration.config import Config, ConfigError
from bot.configuration.secrets import KEY_FILE, SecretBox, SecretUnreadable, mask
from bot.web.keys import ENGINE
from tests.conftest import API_TOKEN, post_webhook
from tests.fakes.meta import text_message
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import repos_of, wait_handled
from tests.web.helpers import OPENAI_KEY, admin, post_form, settings_form

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_page_shows_the_fields_with_env_values(client: TestClient) -> None:
    await admin(client)
    resp = await client.get("/settings")
    assert resp.status == 200
    page = await resp.text()
    for words in ("AI Assistant Settings", "Use stored settings", "OpenAI API Key", "Model", "Instructions",
                  "Nome Cliente", "Enable auto-reply from AI", "Reaction emoji", "Human takeover cooldown",
                  "Burst window", "Enable PDF knowledge base", "Test connection", "Users", "API tokens"):
        assert words in page, words
    assert 'value="Bottega Test"' in page  # BOT_CLIENT_NAME from the env, as nothing was saved
    assert "sk-test" not in page  # even a short env key is never shown
    assert resp.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


async def test_round_trip_applies_on_the_next_turn_and_the_key_is_never_readable(
    client: TestClient, fake_openai: FakeOpenAI, config: Config
) -> None:
    csrf = await admin(client)
    form = settings_form(openai_api_key=OPENAI_KEY, model="gpt-4.1-mini", client_name="Bottega Nuova",
                         instructions="Sei l'assistente di {{Cliente}}. Rispondi in breve.",
                         human_cooldown_seconds="120", burst_window_ms="0")
    resp = await post_form(client, "/settings", csrf, **form)
    assert resp.status == 303
    assert resp.headers["Location"] == "/settings?done=saved"

    page = await (await client.get(resp.headers["Location"])).text()
    assert "Saved." in page
    assert OPENAI_KEY not in page
    assert mask(OPENAI_KEY) in page
    assert mask(OPENAI_KEY) == "sk-…XYZ9"
    assert 'value="gpt-4.1-mini"' in page
    api = await client.get("/api/settings")
    data = await api.json()
    assert OPENAI_KEY not in await api.text()
    assert data["openai_api_key_set"] is True
    assert data["openai_api_key_masked"] == "sk-…XYZ9"
    assert data["openai_api_key_source"] == "stored"
    assert data["model"] == "gpt-4.1-mini"
    assert data["human_cooldown_seconds"] == 120

    # The next customer message runs with the stored values: no restart.
    await post_webhook(client, text_message("wamid.S1", "393331112222", "Ciao"))
    await wait_handled(client, 1)
    call = fake_openai.responses_requests()[-1]
    assert call["model"] == "gpt-4.1-mini"
    assert "Sei l'assistente di Bottega Nuova." in call["instructions"]
    auth = [r.header("Authorization") for r in fake_openai.requests if r.path == "/v1/responses"]
    assert auth[-1] == f"Bearer {OPENAI_KEY}"

    # Unticking "Use stored settings" brings the env values back, and keeps what was saved.
    resp = await post_form(client, "/settings", csrf, **settings_form(use_stored=None, model="gpt-4.1-mini"))
    assert resp.status == 303
    await post_webhook(client, text_message("wamid.S2", "393331112222", "Ancora"))
    await wait_handled(client, 2)
    assert fake_openai.responses_requests()[-1]["model"] == config.model
    assert (await repos_of(client).assistant.get()).openai_api_key_enc

    # At rest the key is encrypted: neither the database file nor its WAL holds it.
    stored = (await repos_of(client).assistant.get()).openai_api_key_enc
    assert stored and stored.startswith("gAAAA")
    raw = b"".join(
        Path(str(config.db_path) + suffix).read_bytes()
        for suffix in ("", "-wal") if Path(str(config.db_path) + suffix).exists()
    )
    assert OPENAI_KEY.encode() not in raw
    assert OPENAI_KEY[3:20].encode() not in raw
    key_file = config.data_dir / KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


async def test_saving_with_the_box_unticked_says_the_values_are_not_in_use(
    client: TestClient, fake_openai: FakeOpenAI, config: Config
) -> None:
    csrf = await admin(client)
    assert 'id="stored-unused"' not in await (await client.get("/settings")).text()  # nothing saved yet

    resp = await post_form(client, "/settings", csrf, **settings_form(use_stored=None, model="gpt-4.1-mini"))
    assert resp.status == 303 and resp.headers["Location"] == "/settings?done=saved_unused"
    page = await (await client.get(resp.headers["Location"])).text()
    assert "Saved, but not in use" in page and "Tick it and press Save" in page
    assert "The changes apply from the next customer message" not in page
    assert 'id="stored-unused"' in page  # next to the box, for as long as it stays unticked
    assert 'class="alert warn"' in page
    # What the page says is what happens: diagnostics and the next turn both run on the env values.
    diagnostics = await (await client.get("/api/diagnostics")).json()
    assert diagnostics["settings"]["use_stored_settings"] is False
    assert diagnostics["settings"]["model"] == config.model != "gpt-4.1-mini"
    await post_webhook(client, text_message("wamid.U1", "393331112222", "Ciao"))
    await wait_handled(client, 1)
    assert fake_openai.responses_requests()[-1]["model"] == config.model

    resp = await post_form(client, "/settings", csrf, **settings_form(model="gpt-4.1-mini"))
    assert resp.headers["Location"] == "/settings?done=saved"
    page = await (await client.get(resp.headers["Location"])).text()
    assert "Saved. The changes apply from the next customer message" in page
    assert 'id="stored-unused"' not in page
    diagnostics = await (await client.get("/api/diagnostics")).json()
    assert diagnostics["settings"]["model"] == "gpt-4.1-mini"


async def test_errors_are_shown_next_to_the_fields_and_what_was_typed_is_kept(client: TestClient) -> None:
    csrf = await admin(client)
    form = settings_form(model="", human_cooldown_seconds="-5", reaction="1", reaction_emoji="🤖🤖🤖🤖🤖🤖🤖🤖🤖🤖🤖",
                         burst_window_ms="lots", instructions="Be kind to <script>alert(1)</script> customers")
    resp = await post_form(client, "/settings", csrf, **form)
    assert resp.status == 400
    page = await resp.text()
    assert "Nothing was saved" in page
    assert "Enter a model name" in page
    assert "cannot be negative" in page
    assert "Use a single emoji" in page
    assert "Enter a whole number" in page
    assert 'value="-5"' in page
    assert 'value="lots"' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # kept, and escaped
    assert "<script>alert(1)</script>" not in page
    assert (await repos_of(client).assistant.get()).updated_at is None


async def test_api_settings_get_and_put(client: TestClient) -> None:
    resp = await client.get("/api/settings", headers=BEARER)
    assert resp.status == 200
    data = await resp.json()
    assert data["use_stored_settings"] is False
    assert data["openai_api_key_source"] == "env"
    assert "openai_api_key" not in data

    bad = {"model": "", "human_cooldown_seconds": -1, "reaction_emoji": "far too long", "autoreply": "yes",
           "colour": "blue", "knowledge_base": {"mode": "cloud"}}
    resp = await client.put("/api/settings", data=orjson.dumps(bad), headers=BEARER)
    assert resp.status == 400
    fields = (await resp.json())["fields"]
    assert set(fields) == {"model", "human_cooldown_seconds", "reaction_emoji", "autoreply", "colour", "kb_mode"}

    resp = await client.put("/api/settings", data=b"not json", headers=BEARER)
    assert resp.status == 400

    good = {"use_stored_settings": True, "openai_api_key": OPENAI_KEY, "reaction": True, "reaction_emoji": "👀",
            "knowledge_base": {"enabled": True, "mode": "local"}}
    resp = await client.put("/api/settings", data=orjson.dumps(good), headers=BEARER)
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    assert OPENAI_KEY not in await resp.text()
    assert data["openai_api_key_masked"] == "sk-…XYZ9"
    assert data["reaction"] is True and data["reaction_emoji"] == "👀"
    assert data["knowledge_base"]["enabled"] is True and data["knowledge_base"]["mode"] == "local"
    assert data["model"] == "gpt-4o-mini"  # untouched fields keep their values

    resp = await client.put("/api/settings", data=orjson.dumps({"openai_api_key": None}), headers=BEARER)
    data = await resp.json()
    assert data["openai_api_key_source"] == "env"
    assert (await repos_of(client).assistant.get()).openai_api_key_enc is None
    audit = await repos_of(client).audit.recent(action="settings_saved")
    assert audit[0]["username"] == "BOT_API_TOKEN"


async def test_test_connection_reports_in_words(client: TestClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.expected_api_key = OPENAI_KEY
    fake_openai.known_models = {"gpt-4o-mini"}
    csrf = await admin(client)
    before = len([r for r in fake_openai.requests if r.path.startswith("/v1/models/")])
    resp = await post_form(client, "/settings/test", csrf, **settings_form(openai_api_key=OPENAI_KEY))
    assert resp.status == 200
    page = await resp.text()
    assert "Connected: the key works and model gpt-4o-mini is available" in page
    assert OPENAI_KEY not in page

    wrong = "sk-proj-WRONG-000000000000000000000000000000"
    resp = await post_form(client, "/settings/test", csrf, **settings_form(openai_api_key=wrong))
    assert "OpenAI rejected the key (401)" in await resp.text()

    resp = await post_form(client, "/settings/test", csrf,
                           **settings_form(openai_api_key=OPENAI_KEY, model="gpt-9-imaginary"))
    page = await resp.text()
    assert "no model called gpt-9-imaginary" in page and "(404)" in page
    assert 'value="gpt-9-imaginary"' in page  # what was typed stays in the form

    # Testing saves nothing.
    assert (await repos_of(client).assistant.get()).openai_api_key_enc is None
    calls = [r for r in fake_openai.requests if r.path.startswith("/v1/models/")]
    assert len(calls) - before == 3  # one call per press: never cached


async def test_keys_tried_with_test_connection_do_not_pile_up_clients(client: TestClient,
                                                                      fake_openai: FakeOpenAI) -> None:
    csrf = await admin(client)
    keys = [f"sk-proj-TRIED-{n:02d}-0123456789abcdefghijklmnopqrstuv" for n in range(12)]
    for key in keys:
        resp = await post_form(client, "/settings/test", csrf, **settings_form(openai_api_key=key))
        assert "Connected" in await resp.text()
    tried = {r.header("Authorization") for r in fake_openai.requests if r.path.startswith("/v1/models/")}
    assert {f"Bearer {key}" for key in keys} <= tried  # each press used its own key...
    pool = client.app[ENGINE]._clients  # type: ignore[index]
    assert len(pool) == MAX_CLIENTS  # ...and only the most recent few keep a client
    assert not any(key in repr(pool._entries) for key in keys)  # kept by hash, not by key
    # The key in use still works after the others were tried and dropped.
    await post_webhook(client, text_message("wamid.POOL1", "393330000123", "ciao"))
    await wait_handled(client, 1)


async def test_a_client_pushed_out_of_the_pool_closes_only_when_its_last_call_ends(fake_openai: FakeOpenAI) -> None:
    made: list[openai.AsyncOpenAI] = []

    def factory(api_key: str, base_url: str | None) -> openai.AsyncOpenAI:
        made.append(openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0))
        return made[-1]

    pool = ClientPool(factory, size=2)
    async with pool.lease("key-a", fake_openai.base_url) as held:
        for key in ("key-b", "key-c", "key-d"):  # pushes key-a (and then key-b) out
            async with pool.lease(key, fake_openai.base_url):
                pass
        assert len(pool) == 2
        assert made[1].is_closed()  # key-b: out, and nobody was using it
        assert not held.is_closed()  # key-a: out, but a call still holds it
        await held.models.retrieve("gpt-4o-mini")  # and it still works
    assert held.is_closed()  # closed as soon as that call ended
    async with pool.lease("key-a", fake_openai.base_url) as again:
        assert again is not held and not again.is_closed()  # a fresh client for key-a
    await pool.close()
    assert all(c.is_closed() for c in made)


def test_secret_box(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "d")
    box = SecretBox.load(config)
    token = box.encrypt("sk-secret-value-1234")
    assert box.decrypt(token) == "sk-secret-value-1234"
    assert SecretBox.load(config).decrypt(token) == "sk-secret-value-1234"  # the key file is reused
    assert stat.S_IMODE(os.stat(tmp_path / "d" / KEY_FILE).st_mode) == 0o600
    other = SecretBox.load(Config(data_dir=tmp_path / "d", secret_key="x" * 40))
    with pytest.raises(SecretUnreadable, match="Enter the OpenAI key again"):
        other.decrypt(token)
    with pytest.raises(ConfigError, match="BOT_SECRET_KEY"):
        SecretBox.load(Config(data_dir=tmp_path / "d", secret_key="short"))
    assert mask("sk-proj-abcdefghijklmnop") == "sk-…mnop"
    assert mask("short") == "••••••••"
    assert mask("") == ""


async def test_unreadable_stored_key_is_reported(client: TestClient) -> None:
    csrf = await admin(client)
    await post_form(client, "/settings", csrf, **settings_form(openai_api_key=OPENAI_KEY))
    # As if the secret key had changed since the save: the stored token no longer decrypts.
    foreign = SecretBox(Fernet.generate_key()).encrypt("sk-other-000000000000000")
    await repos_of(client).db.execute("UPDATE assistant_settings SET openai_api_key_enc = $1", foreign)
    page = await (await client.get("/settings")).text()
    assert "cannot be decrypted" in page
    data = await (await client.get("/api/settings")).json()
    assert data["openai_api_key_source"] == "env"
    assert "Enter the OpenAI key again" in data["openai_api_key_problem"]
