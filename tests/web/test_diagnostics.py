"""/ai-diagnostics and /api/diagnostics: counts after known traffic, the key check, Reset Sessions, access log."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp.test_utils import TestClient

from bot import readiness
from bot.configuration.config import Config
from bot.web.keys import ACCESS
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph, GraphFailure
from tests.fakes.meta import text_message
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import repos_of, wait_conversation, wait_handled, wait_until
from tests.web.helpers import OPENAI_KEY, admin, another_browser, csrf_in, post_form, settings_form, sign_in

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
ANNA, BRUNO = "393330000001", "393330000002"


async def _traffic(client: TestClient, fake_graph: FakeGraph) -> None:
    """3 messages from Anna, 1 from Bruno (whose reply fails with 131047), 1 repeat that is dropped."""
    await post_webhook(client, text_message("wamid.A1", ANNA, "Ciao", name="Anna"))
    await wait_handled(client, 1)
    await post_webhook(client, text_message("wamid.A2", ANNA, "Avete il pane?", name="Anna"))
    await wait_handled(client, 2)
    await post_webhook(client, text_message("wamid.A1", ANNA, "Ciao", name="Anna"))  # Meta retried: a repeat
    await post_webhook(client, text_message("wamid.A3", ANNA, "Grazie", name="Anna"))
    await wait_handled(client, 3)
    fake_graph.errors.append(GraphFailure.re_engagement())
    await post_webhook(client, text_message("wamid.B1", BRUNO, "Buongiorno", name="Bruno"))
    await wait_handled(client, 4)

    async def failed_send() -> bool:
        return bool(await repos_of(client).db.fetchval("SELECT COUNT(*) FROM outbox WHERE status = 'failed'"))

    await wait_until(failed_send, what="the failed send to Bruno")


async def test_counts_after_known_traffic(client: TestClient, fake_graph: FakeGraph) -> None:
    await _traffic(client, fake_graph)
    resp = await client.get("/api/diagnostics", headers=BEARER)
    assert resp.status == 200
    d = await resp.json()
    assert d["whatsapp_24h"]["incoming"] == 4
    assert d["whatsapp_24h"]["outgoing"] == 4
    assert d["whatsapp_24h"]["failed_by_code"] == {"131047": 1}
    assert d["whatsapp_24h"]["last_inbound_at"] and d["whatsapp_24h"]["last_outbound_at"]
    assert d["sessions"] == {"live_actors": 2, "stored": 2, "paused": 0, "needs_human": 0}

    resp = await client.post(f"/api/conversations/{ANNA}/pause", headers=BEARER)
    assert resp.status == 200
    # The pause is a command for Anna's actor, applied just after the answer: wait for it, not for luck.
    await wait_conversation(client, lambda c: c.paused, "Anna paused", ANNA)
    d = await (await client.get("/api/diagnostics", headers=BEARER)).json()
    assert d["sessions"]["paused"] == 1

    assert d["code"]["version"] == "0.1.0"
    assert d["code"]["commit"] and d["code"]["commit_source"] in ("git", "BUILD_ID file", "unknown")
    assert 3 in d["code"]["migrations"]
    assert d["settings"]["autoreply"] is True and d["settings"]["model"] == "gpt-4o-mini"
    assert d["settings"]["knowledge_base"]["status"] == "empty"
    assert d["openai"]["api_key_set"] is True and "sk-test" not in orjson.dumps(d).decode()
    assert d["tool_load_errors"] == []

    await admin(client)
    page = await (await client.get("/ai-diagnostics")).text()
    assert '<dd id="incoming">4</dd>' in page
    assert '<dd id="outgoing">4</dd>' in page
    assert "error 131047: 1" in page
    assert '<dd id="stored-sessions">2</dd>' in page


async def test_key_check_is_cached_and_explained(client: TestClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.expected_api_key = "sk-something-else-entirely"
    await admin(client)
    for _ in range(3):
        page = await (await client.get("/ai-diagnostics")).text()
        assert "OpenAI rejected the key (401)" in page
    d = await (await client.get("/api/diagnostics")).json()
    assert d["openai"]["key_valid"] is False
    calls = [r for r in fake_openai.requests if r.path.startswith("/v1/models/")]
    assert len(calls) == 1  # one real check, then the cached answer


async def test_build_id_and_recent_errors_and_tool_failures(make_client: ClientFactory, tmp_path: Path) -> None:
    tools = tmp_path / "shop_tools"
    tools.mkdir()
    (tools / "broken.py").write_text("import does_not_exist_anywhere\n")
    client = await make_client(build_id="build-2026-11-22.1", tools_path=(str(tools),))
    await repos_of(client).errors.record("openai_auth", "OpenAI rejected the API key", session_id="s_x")
    d = await (await client.get("/api/diagnostics", headers=BEARER)).json()
    assert d["code"]["commit"] == "build-2026-11-22.1" and d["code"]["commit_source"] == "BOT_BUILD_ID"
    assert d["recent_errors"][0]["type"] == "openai_auth" and d["recent_errors"][0]["count"] == 1
    assert len(d["tool_load_errors"]) == 1
    assert "broken.py" in d["tool_load_errors"][0]["module"]
    assert "ModuleNotFoundError" in d["tool_load_errors"][0]["error"]
    await admin(client)
    page = await (await client.get("/ai-diagnostics")).text()
    assert "broken.py" in page and "OpenAI rejected the API key" in page


async def test_reset_sessions(client: TestClient, fake_graph: FakeGraph, fake_openai: FakeOpenAI) -> None:
    await _traffic(client, fake_graph)
    repos = repos_of(client)
    before = {r["customer_id"]: dict(r) for r in await repos.db.fetch("SELECT * FROM conversations")}
    assert all(r["last_response_id"] for r in before.values())
    csrf = await admin(client)

    page = await (await client.get("/ai-diagnostics")).text()
    assert "Reset Sessions" in page and 'data-confirm="Reset every session?' in page

    resp = await post_form(client, "/ai-diagnostics/reset-sessions", csrf)  # the box was not ticked
    assert resp.status == 400
    assert "Nothing was reset" in await resp.text()
    assert (await repos.db.fetchval("SELECT COUNT(*) FROM conversations WHERE last_response_id IS NULL")) == 0

    resp = await post_form(client, "/ai-diagnostics/reset-sessions", csrf, confirm="yes")
    assert resp.status == 303
    assert resp.headers["Location"] == "/ai-diagnostics?reset=2"
    assert "Sessions reset: 2 conversations" in await (await client.get(resp.headers["Location"])).text()
    after = {r["customer_id"]: dict(r) for r in await repos.db.fetch("SELECT * FROM conversations")}
    for customer, row in after.items():
        assert row["last_response_id"] is None
        assert row["session_id"] != before[customer]["session_id"]
        assert row["profile_name"] == before[customer]["profile_name"]  # the contact is kept
    entry = (await repos.audit.recent(action="sessions_reset"))[0]
    assert entry["username"] == "admin" and entry["ip"] == "127.0.0.1" and entry["detail"] == "2 conversations"

    # The next message starts a fresh chain.
    await post_webhook(client, text_message("wamid.A4", ANNA, "Di nuovo io", name="Anna"))
    await wait_handled(client, 5)
    assert fake_openai.responses_requests()[-1].get("previous_response_id") is None


async def test_access_log_records_user_ip_and_time(client: TestClient) -> None:
    await admin(client)  # opens /ai-diagnostics once
    await client.get("/ai-diagnostics")
    async with another_browser(client) as api:
        await api.get("/api/diagnostics", headers=BEARER)
    async with another_browser(client) as operator:
        from bot.web.keys import ACCESS

        await client.app[ACCESS].add_user("giulia", "operator", "operator-password-2")  # type: ignore[index]
        assert (await sign_in(operator, "giulia", "operator-password-2")).status == 303
        resp = await operator.get("/ai-diagnostics")
        assert resp.status == 200  # every signed-in user may look
    entries = await repos_of(client).audit.recent(action="view_diagnostics")
    assert [e["username"] for e in entries] == ["giulia", "admin", "admin"]
    assert all(e["ip"] == "127.0.0.1" and e["created_at"] for e in entries)
    assert (await repos_of(client).audit.recent(action="api_diagnostics"))[0]["username"] == "BOT_API_TOKEN"
    d = await (await client.get("/api/diagnostics")).json()
    by_user = {a["username"]: a["count"] for a in d["recent_accesses"]}
    assert by_user == {"admin": 3, "giulia": 1, "BOT_API_TOKEN": 1}
    page = await (await client.get("/ai-diagnostics")).text()
    assert "giulia" in page and "127.0.0.1" in page


async def test_operators_may_look_but_not_reset_nor_see_who_else_looked(
    client: TestClient, fake_graph: FakeGraph
) -> None:
    await _traffic(client, fake_graph)
    await admin(client)  # the admin has looked: that is in the audit log, with an IP
    repos = repos_of(client)
    await client.app[ACCESS].add_user("paolo", "operator", "operator-password-3")  # type: ignore[index]
    token = await client.app[ACCESS].create_token("kiosk", "operator", "admin")  # type: ignore[index]
    async with another_browser(client) as operator:
        assert (await sign_in(operator, "paolo", "operator-password-3")).status == 303
        page = await operator.get("/ai-diagnostics")
        assert page.status == 200
        html = await page.text()
        assert "Stored conversations" in html  # the diagnostics themselves
        assert "Reset Sessions" not in html and "/ai-diagnostics/reset-sessions" not in html
        assert "Who opened the diagnostics" not in html and "127.0.0.1" not in html
        csrf = csrf_in(html)
        resp = await operator.post("/ai-diagnostics/reset-sessions", data={"csrf_token": csrf, "confirm": "yes"},
                                   allow_redirects=False)
        assert resp.status == 403
        assert "Only an administrator can reset the sessions" in await resp.text()
        data = await (await operator.get("/api/diagnostics", headers={"X-CSRF-Token": csrf})).json()
        assert "sessions" in data and "recent_accesses" not in data and "recent_activity" not in data
    async with another_browser(client) as kiosk:
        data = await (await kiosk.get("/api/diagnostics", headers={"Authorization": f"Bearer {token}"})).json()
        assert "sessions" in data and "recent_accesses" not in data and "recent_activity" not in data
    assert await repos.db.fetchval("SELECT COUNT(*) FROM conversations WHERE last_response_id IS NULL") == 0
    assert await repos.audit.recent(action="sessions_reset") == []
    # The admin still sees everything, the operator's visits included.
    data = await (await client.get("/api/diagnostics")).json()
    assert {a["username"] for a in data["recent_accesses"]} >= {"admin", "paolo", "token:kiosk"}
    assert data["recent_activity"]


async def test_missing_key_and_app_secret_are_explained_with_the_fix(make_client: ClientFactory) -> None:
    client = await make_client(openai_api_key="", openai_base_url=None, whatsapp_app_secret="")
    csrf = await admin(client)
    d = await (await client.get("/api/diagnostics")).json()
    missing = {p["setting"]: p for p in d["readiness"]}
    assert set(missing) == {"OPENAI_API_KEY", "WHATSAPP_APP_SECRET"}
    assert "Set OPENAI_API_KEY" in missing["OPENAI_API_KEY"]["fix"]
    page = await (await client.get("/ai-diagnostics")).text()
    assert "Needs attention" in page and "App settings → Basic" in page

    # A key saved on the settings page but with the box unticked is still not in use: said so, with its fix.
    form = settings_form(use_stored=None, openai_api_key=OPENAI_KEY)
    assert (await post_form(client, "/settings", csrf, **form)).status == 303
    d = await (await client.get("/api/diagnostics")).json()
    key = next(p for p in d["readiness"] if p["setting"] == "OPENAI_API_KEY")
    assert "“Use stored settings” is not ticked" in key["effect"]
    assert "Tick “Use stored settings”" in key["fix"]
    # (Ticking it would make the key check call the real OpenAI: problems() below covers that case.)


def test_readiness_rules() -> None:
    complete = Config(openai_api_key="sk-x", whatsapp_app_secret="s", whatsapp_access_token="t")
    assert readiness.problems(complete, key_in_use=True, key_saved_unused=False) == []
    no_key = complete.with_overrides(openai_api_key="")
    assert [p.setting for p in readiness.problems(no_key, key_in_use=False, key_saved_unused=False)] == [
        "OPENAI_API_KEY"]
    assert readiness.problems(no_key, key_in_use=True, key_saved_unused=False) == []  # stored and ticked
    # A local OpenAI-compatible server may take no key at all.
    local = no_key.with_overrides(openai_base_url="http://127.0.0.1:11434/v1")
    assert readiness.problems(local, key_in_use=False, key_saved_unused=False) == []
    bare = Config()
    assert [p.setting for p in readiness.problems(bare, key_in_use=False, key_saved_unused=True)] == [
        "OPENAI_API_KEY", "WHATSAPP_APP_SECRET", "WHATSAPP_ACCESS_TOKEN"]


async def test_a_complete_set_up_needs_no_attention(client: TestClient) -> None:
    await admin(client)
    d = await (await client.get("/api/diagnostics")).json()
    assert d["readiness"] == []
    assert "Needs attention" not in await (await client.get("/ai-diagnostics")).text()
