"""Sign-in, sessions, CSRF, throttling, API tokens, roles, and the default-deny rule over every route."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from bot.commands import add_user
from bot.persistence.database import Database
from bot.persistence.users import UserRepo
from bot.web.access import Attempt, LoginThrottle, client_ip, hash_password, parse_networks, verify_password
from bot.web.auth import SESSION_COOKIE
from bot.web.keys import ACCESS
from tests.backend import config_for
from tests.conftest import API_TOKEN, ClientFactory
from tests.helpers import repos_of
from tests.web.helpers import ADMIN_PASSWORD, admin, another_browser, csrf_in, post_form, settings_form, sign_in

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}

# (method, canonical path) of every route that needs no sign-in; everything else must be refused.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/webhooks/whatsapp"),
    ("POST", "/webhooks/whatsapp"),
    ("GET", "/orders/confirm/{token}"),
    ("POST", "/orders/confirm/{token}"),
    ("GET", "/static"),
}


def _concrete(canonical: str) -> str:
    # Dummy values for path parameters: digits satisfy {id:\d+} patterns and plain {name} alike.
    return re.sub(r"\{[^}]+\}", "1", canonical)


async def _refused_by_auth(resp: object) -> bool:
    from aiohttp import ClientResponse

    assert isinstance(resp, ClientResponse)
    if resp.status in (301, 302, 303):
        return resp.headers.get("Location", "").startswith("/login?next=")
    if resp.status == 401:
        body = await resp.text()
        return "API token" in body or "Sign in again" in body or "sign in" in body
    return False


async def test_every_route_refuses_strangers_except_the_public_ones(client: TestClient) -> None:
    app = client.app
    assert app is not None
    checked: set[tuple[str, str]] = set()
    open_routes: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        resource = route.resource
        assert resource is not None
        canonical = resource.canonical
        path = "/static/style.css" if isinstance(resource, web.StaticResource) else _concrete(canonical)
        for method in (["GET", "POST", "PUT", "DELETE"] if route.method == "*" else [route.method]):
            resp = await client.request(method, path, allow_redirects=False)
            refused = await _refused_by_auth(resp)
            checked.add((method, canonical))
            if not refused:
                open_routes.add((method, canonical))
            if path.startswith("/api/") or path == "/metrics":
                # JSON clients get JSON, never an HTML redirect.
                assert resp.status in (401, 403) or (method, canonical) in PUBLIC, (method, path, resp.status)
    assert open_routes == PUBLIC & checked, sorted(open_routes ^ (PUBLIC & checked))
    # The routes of this issue are really there (and so were really checked).
    for needed in [("GET", "/settings"), ("PUT", "/api/settings"), ("GET", "/ai-diagnostics"),
                   ("POST", "/ai-diagnostics/reset-sessions"), ("GET", "/api/diagnostics"), ("GET", "/metrics")]:
        assert needed in checked


async def test_html_pages_redirect_to_sign_in_and_back(client: TestClient) -> None:
    resp = await client.get("/settings?tab=users", allow_redirects=False)
    assert resp.status == 302
    location = URL(resp.headers["Location"])
    assert location.path == "/login" and location.query["next"] == "/settings?tab=users"
    resp = await sign_in(client, next_path="/settings?tab=users")
    assert resp.status == 303
    assert resp.headers["Location"] == "/settings?tab=users"
    page = await client.get("/settings?tab=users")
    assert page.status == 200
    assert "AI Assistant Settings" in await page.text()


async def test_the_root_address_leads_to_the_inbox(client: TestClient) -> None:
    # Signed out: to the sign-in page, heading for the inbox (not back to "/").
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 302
    location = URL(resp.headers["Location"])
    assert location.path == "/login" and location.query["next"] == "/inbox"
    login = await client.get(resp.headers["Location"])
    assert 'name="next" value="/inbox"' in await login.text()
    # Signed in: straight to the inbox, and a sign-in heading for "/" lands there in one step.
    resp = await sign_in(client, next_path="/")
    assert resp.status == 303 and resp.headers["Location"] == "/inbox"
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/inbox"
    page = await client.get("/")
    assert page.status == 200 and page.url.path == "/inbox"
    assert 'id="conversations"' in await page.text()


async def test_sign_in_wrong_password_and_open_redirects(client: TestClient) -> None:
    resp = await sign_in(client, password="wrong-password")
    assert resp.status == 401
    assert "Wrong username or password" in await resp.text()
    resp = await sign_in(client, username="nobody", password="whatever-it-is")
    assert resp.status == 401
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "/\t/evil.example",
                 "/\n/evil.example", "/\x7f/evil.example", "javascript:alert(1)", "evil.example", " //evil.example",
                 "/login?next=//evil.example"):
        resp = await sign_in(client, next_path=evil)
        assert resp.status == 303
        assert resp.headers["Location"] == "/inbox"
        await client.post("/logout", data={"csrf_token": csrf_in(await (await client.get("/ai-diagnostics")).text())})


async def test_session_cookie_flags_and_sign_out(client: TestClient) -> None:
    resp = await sign_in(client)
    cookie = resp.headers["Set-Cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the trusted-proxy test for HTTPS
    token = resp.cookies[SESSION_COOKIE].value
    rows = await repos_of(client).db.fetch("SELECT token_hash FROM web_sessions")
    assert len(rows) == 1 and token not in rows[0]["token_hash"]  # only the hash is stored
    page = await client.get("/ai-diagnostics")
    csrf = csrf_in(await page.text())
    resp = await post_form(client, "/logout", csrf)
    assert resp.status == 303
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM web_sessions") == 0
    resp = await client.get("/ai-diagnostics", allow_redirects=False)
    assert resp.status == 302


async def test_expired_sessions_are_refused(client: TestClient) -> None:
    await admin(client)
    await repos_of(client).db.execute("UPDATE web_sessions SET expires_at = $1", time.time() - 1)
    resp = await client.get("/ai-diagnostics", allow_redirects=False)
    assert resp.status == 302
    resp = await client.get("/api/diagnostics")
    assert resp.status == 401


async def test_forms_without_or_with_a_wrong_csrf_token_are_refused(client: TestClient) -> None:
    csrf = await admin(client)
    form = settings_form(model="gpt-4o")
    resp = await client.post("/settings", data=form, allow_redirects=False)
    assert resp.status == 403
    assert "Reload the page" in await resp.text()
    resp = await client.post("/settings", data={**form, "csrf_token": "forged"}, allow_redirects=False)
    assert resp.status == 403
    resp = await client.post("/ai-diagnostics/reset-sessions", data={"confirm": "yes"}, allow_redirects=False)
    assert resp.status == 403
    resp = await client.post("/logout", data={"csrf_token": csrf[:-1] + "x"}, allow_redirects=False)
    assert resp.status == 403
    assert (await repos_of(client).assistant.get()).model is None  # nothing was saved
    resp = await post_form(client, "/settings", csrf, **form)
    assert resp.status == 303


async def test_json_calls_with_a_session_need_the_csrf_header(client: TestClient) -> None:
    csrf = await admin(client)
    body = orjson.dumps({"model": "gpt-4o"})
    resp = await client.put("/api/settings", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 403
    resp = await client.put("/api/settings", data=body,
                            headers={"Content-Type": "application/json", "X-CSRF-Token": "nope"})
    assert resp.status == 403
    resp = await client.put("/api/settings", data=body,
                            headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
    assert resp.status == 200
    # A bearer token is not sent by browsers on their own, so it needs no CSRF token.
    async with another_browser(client) as other:
        resp = await other.put("/api/settings", data=orjson.dumps({"model": "gpt-4.1-mini"}), headers=BEARER)
        assert resp.status == 200
        assert (await resp.json())["model"] == "gpt-4.1-mini"


async def test_login_form_needs_its_own_token(client: TestClient) -> None:
    resp = await client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD},
                             allow_redirects=False)
    assert resp.status == 403


async def test_sign_in_is_throttled_after_five_failures_per_ip(client: TestClient) -> None:
    for _ in range(5):
        resp = await sign_in(client, password="wrong-password")
        assert resp.status == 401
    resp = await sign_in(client, password="wrong-password")
    assert resp.status == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert re.search(r"Too many attempts\. Wait \d+ seconds", await resp.text())
    # Even the right password waits: the throttle is checked before the password.
    resp = await sign_in(client)
    assert resp.status == 429
    failures = await repos_of(client).audit.recent(action="sign_in_failed")
    assert len(failures) == 5 and failures[0]["ip"] == "127.0.0.1"


async def _login_token(client: TestClient) -> str:
    page = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]*)"', await page.text())
    assert token
    return token.group(1)


async def test_wrong_passwords_sent_all_at_once_are_all_counted(client: TestClient) -> None:
    # The attempt is counted before the slow password hash: 50 at once cannot all slip past the limit.
    token = await _login_token(client)

    async def attempt() -> int:
        form = {"username": "admin", "password": "wrong-password", "csrf_token": token}
        async with client.post("/login", data=form, allow_redirects=False) as resp:
            return resp.status

    statuses = await asyncio.gather(*(attempt() for _ in range(50)))
    assert statuses.count(401) == 5 and statuses.count(429) == 45, statuses
    assert len(await repos_of(client).audit.recent(action="sign_in_failed")) == 5


async def test_signing_in_to_your_own_account_buys_no_guesses_at_the_admins(client: TestClient) -> None:
    await client.app[ACCESS].add_user("eve", "operator", "eve-own-password")  # type: ignore[index]
    guesses: list[int] = []
    for _ in range(2):  # 4 wrong admin passwords, 1 right one for eve, and again
        for _ in range(4):
            guesses.append((await sign_in(client, "admin", "guess-at-admin")).status)
        resp = await sign_in(client, "eve", "eve-own-password")
        assert resp.status in (303, 429)
        await client.post("/logout", data={"csrf_token": "x"})
    assert guesses.count(401) == 5 and 429 in guesses, guesses
    resp = await sign_in(client, "admin", "guess-at-admin")
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0


async def test_an_unknown_user_and_a_wrong_password_look_the_same(make_client: ClientFactory) -> None:
    client = await make_client(trusted_proxies=("127.0.0.1",))
    answers = []
    for n, username in enumerate(["admin", "nobody-here", "admin", "nobody-here"]):
        started = time.perf_counter()
        # Each from its own address, so the throttle does not come into it.
        resp = await sign_in(client, username, "not-the-password", headers={"X-Forwarded-For": f"203.0.113.{n}"})
        body = (await resp.text()).replace(f'name="username" value="{username}"', 'name="username" value=""')
        answers.append((username, resp.status, body, time.perf_counter() - started))
    known = [a for a in answers if a[0] == "admin"]
    unknown = [a for a in answers if a[0] != "admin"]
    assert {a[1] for a in answers} == {401}
    assert {a[2] for a in answers} == {known[0][2]}, "the page must not tell which usernames exist"
    # An unknown name still costs a password hash (about 0.1 s), not a quick database miss.
    assert min(a[3] for a in unknown) > 0.4 * min(a[3] for a in known)


@pytest.fixture
async def throttle_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A real database for the sign-in throttle (it lives there, shared by every process)."""
    db = Database.create(tmp_path / "throttle.db")
    await db.open()
    yield db
    await db.close()


async def test_throttle_window_slides(throttle_db: Database) -> None:
    now = [1000.0]
    throttle = LoginThrottle(throttle_db, limit=5, window_seconds=60, clock=lambda: now[0])
    for i in range(5):
        now[0] = 1000.0 + i
        assert isinstance(await throttle.reserve("10.0.0.1", "admin"), Attempt)
    assert await throttle.reserve("10.0.0.1", "someone") == pytest.approx(56.0)  # per IP, whatever the name
    assert isinstance(await throttle.reserve("10.0.0.2", "other"), Attempt)
    now[0] = 1060.5
    assert isinstance(await throttle.reserve("10.0.0.1", "admin"), Attempt)
    # The table keeps only the window's attempts.
    assert await throttle_db.fetchval("SELECT COUNT(*) FROM signin_attempts WHERE at <= 1000.5") == 0


async def test_throttle_counts_per_username_across_ips_and_a_success_clears_only_its_own(
    throttle_db: Database,
) -> None:
    now = [1000.0]
    throttle = LoginThrottle(throttle_db, limit=5, user_limit=10, window_seconds=60, clock=lambda: now[0])
    for i in range(10):  # ten addresses guessing at admin: the username's limit is reached
        assert isinstance(await throttle.reserve(f"10.0.0.{i}", "Admin"), Attempt)
    assert not isinstance(await throttle.reserve("10.9.9.9", "admin"), Attempt)  # case-insensitive names
    assert isinstance(await throttle.reserve("10.9.9.9", "maria"), Attempt)
    await throttle_db.execute("DELETE FROM signin_attempts")
    # From one IP: four wrong guesses at admin, then a right password for eve's own account.
    for _ in range(4):
        await throttle.reserve("10.0.0.1", "admin")
    eve = await throttle.reserve("10.0.0.1", "eve")
    assert isinstance(eve, Attempt)
    await throttle.succeeded(eve)
    await throttle.reserve("10.0.0.1", "admin")
    assert not isinstance(await throttle.reserve("10.0.0.1", "admin"), Attempt), \
        "eve's success must not clear the guesses at admin"
    await throttle_db.execute("DELETE FROM signin_attempts")
    # The user's own typos from this IP are forgiven by their correct password, and no one else's.
    for _ in range(3):
        await throttle.reserve("10.0.0.1", "maria")
    await throttle.reserve("10.0.0.1", "admin")
    right = await throttle.reserve("10.0.0.1", "maria")
    assert isinstance(right, Attempt)
    await throttle.succeeded(right)
    for _ in range(3):
        assert isinstance(await throttle.reserve("10.0.0.1", "maria"), Attempt)  # 1 (admin) + 3 new ones
    assert isinstance(await throttle.reserve("10.0.0.1", "maria"), Attempt)  # the fifth
    assert not isinstance(await throttle.reserve("10.0.0.1", "maria"), Attempt)


def test_client_ip_trusts_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = parse_networks(["10.0.0.0/8", "192.168.1.1"])
    assert client_ip("203.0.113.9", ["198.51.100.1"], trusted) == "203.0.113.9"
    assert client_ip("10.1.2.3", ["198.51.100.1"], trusted) == "198.51.100.1"
    assert client_ip("192.168.1.1", ["198.51.100.1, 10.0.0.5"], trusted) == "198.51.100.1"
    # A forged leftmost entry does not win: the nearest untrusted hop does.
    assert client_ip("10.1.2.3", ["6.6.6.6, 198.51.100.1"], trusted) == "198.51.100.1"
    assert client_ip("10.1.2.3", ["not-an-ip"], trusted) == "10.1.2.3"
    assert client_ip("10.1.2.3", [], trusted) == "10.1.2.3"
    assert client_ip("::ffff:10.0.0.1", ["198.51.100.7"], trusted) == "198.51.100.7"
    assert client_ip("10.1.2.3", ["198.51.100.1"], ()) == "10.1.2.3"


async def test_trusted_proxy_sets_ip_and_secure_cookie(make_client: ClientFactory) -> None:
    client = await make_client(trusted_proxies=("127.0.0.1",))
    headers = {"X-Forwarded-For": "203.0.113.50", "X-Forwarded-Proto": "https"}
    page = await client.get("/login", headers=headers)
    assert "Secure" in page.headers["Set-Cookie"]
    # The client speaks plain HTTP to the "proxy", so it would not send a Secure cookie back: do it by hand.
    login_csrf = page.cookies["bot_login_csrf"].value
    resp = await client.post(
        "/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": login_csrf},
        headers={**headers, "Cookie": f"bot_login_csrf={login_csrf}"}, allow_redirects=False,
    )
    assert resp.status == 303
    assert "Secure" in resp.headers["Set-Cookie"]
    entries = await repos_of(client).audit.recent(action="sign_in")
    assert entries[0]["ip"] == "203.0.113.50"


async def test_spoofed_forwarded_headers_are_ignored_without_a_trusted_proxy(client: TestClient) -> None:
    resp = await sign_in(client, headers={"X-Forwarded-For": "203.0.113.50", "X-Forwarded-Proto": "https"})
    assert "Secure" not in resp.headers["Set-Cookie"]
    entries = await repos_of(client).audit.recent(action="sign_in")
    assert entries[0]["ip"] == "127.0.0.1"


async def test_operators_cannot_open_settings(client: TestClient) -> None:
    await client.app[ACCESS].add_user("maria", "operator", "operator-password-1")  # type: ignore[index]
    resp = await sign_in(client, "maria", "operator-password-1")
    assert resp.status == 303
    page = await client.get("/ai-diagnostics")
    assert page.status == 200
    text = await page.text()
    assert 'href="/settings"' not in text
    csrf = csrf_in(text)
    resp = await client.get("/settings")
    assert resp.status == 403
    assert "administrator" in await resp.text()
    resp = await post_form(client, "/settings", csrf, **settings_form())
    assert resp.status == 403
    resp = await client.get("/api/settings")
    assert resp.status == 403
    resp = await post_form(client, "/settings/users", csrf, username="eve", role="admin", password="x" * 12)
    assert resp.status == 403
    assert await repos_of(client).users.by_name("eve") is None


async def test_api_tokens_from_env_and_from_the_settings_page(client: TestClient) -> None:
    resp = await client.get("/api/diagnostics", headers=BEARER)
    assert resp.status == 200
    resp = await client.get("/metrics", headers=BEARER)
    assert resp.status == 200
    resp = await client.get("/api/diagnostics", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # A bearer token opens only /api/* and /metrics, not the HTML pages.
    resp = await client.get("/ai-diagnostics", headers=BEARER, allow_redirects=False)
    assert resp.status == 302

    csrf = await admin(client)
    resp = await post_form(client, "/settings/tokens", csrf, name="accounting", role="operator")
    assert resp.status == 200
    page = await resp.text()
    token = re.search(r'id="new-token" value="([^"]+)"', page)
    assert token, "the new token is shown once"
    made = token.group(1)
    stored = await repos_of(client).db.fetch("SELECT token_hash, hint FROM api_tokens")
    assert made not in str([dict(r) for r in stored])
    again = await client.get("/settings")
    assert made not in await again.text()

    async with another_browser(client) as api:
        auth = {"Authorization": f"Bearer {made}"}
        assert (await api.get("/api/conversations", headers=auth)).status == 200
        assert (await api.get("/metrics", headers=auth)).status == 200
        assert (await api.get("/api/settings", headers=auth)).status == 403  # an operator token
        token_id = (await repos_of(client).users.tokens())[0].id
        resp = await post_form(client, f"/settings/tokens/{token_id}/revoke", csrf)
        assert resp.status == 303
        assert (await api.get("/api/conversations", headers=auth)).status == 401


async def test_metrics_take_a_bearer_token_only(client: TestClient) -> None:
    await admin(client)
    resp = await client.get("/metrics")
    assert resp.status == 401


async def test_admin_adds_users_on_the_settings_page(client: TestClient) -> None:
    csrf = await admin(client)
    resp = await post_form(client, "/settings/users", csrf, username="luca", role="operator", password="short")
    assert resp.status == 400
    assert "at least 10 characters" in await resp.text()
    resp = await post_form(client, "/settings/users", csrf, username="luca", role="operator",
                           password="a-long-password")
    assert resp.status == 303
    resp = await post_form(client, "/settings/users", csrf, username="LUCA", role="operator",
                           password="a-long-password")
    assert resp.status == 400
    assert "already a user" in await resp.text()
    async with another_browser(client) as other:
        assert (await sign_in(other, "luca", "a-long-password")).status == 303
    me = await repos_of(client).users.by_name("admin")
    assert me is not None
    resp = await post_form(client, f"/settings/users/{me.id}/delete", csrf)
    assert resp.status == 400  # not yourself


async def test_first_start_prints_a_generated_admin_password_once(
    make_client: ClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = await make_client(admin_password="")
    err = capsys.readouterr().err
    match = re.search(r"password: (\S+)", err)
    assert match, err
    password = match.group(1)
    assert len(password) >= 16
    # Only in the box on stderr: never in a structlog line.
    for line in err.splitlines():
        if "admin_user_created" in line:
            assert password not in line
    assert (await sign_in(client, "admin", password)).status == 303
    user = await repos_of(client).users.credentials("admin")
    assert user is not None and password not in user[1] and user[1].startswith("scrypt$")


def test_password_hashes_are_salted_and_verified() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsf", first)
    assert not verify_password("x", "garbage")


async def test_add_user_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    config = config_for(tmp_path / "data")
    monkeypatch.setattr("sys.stdin", io.StringIO("a-good-password\n"))
    assert await add_user.run(config, ["paola", "--role", "admin", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a-good-password\n"))
    assert await add_user.run(config, ["paola", "--password-stdin"]) == 1  # exists
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password\n"))
    assert await add_user.run(config, ["paola", "--update", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert await add_user.run(config, ["bob", "--password-stdin"]) == 2
    prompts = iter(["typed-password-1", "typed-password-1"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(prompts))
    assert await add_user.run(config, ["carla"]) == 0
    db = Database.create(config.database_url)
    await db.open()
    try:
        users = UserRepo(db)
        paola = await users.credentials("paola")
        assert paola is not None and paola[0].role == "admin"  # --update kept the role
        assert verify_password("another-password", paola[1])
        carla = await users.credentials("carla")
        assert carla is not None and carla[0].role == "operator"
    finally:
        await db.close()
