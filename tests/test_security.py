"""Security: webhook signatures, authentication on every route, CSRF on every form, uploads, XSS, SQL
injection, secrets in logs and files, and no customer phone number in anything sent to OpenAI."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.commands.import_products import parse_catalogue
from bot.web.auth import SESSION_COOKIE
from bot.web.keys import ACCESS
from tests.backend import on_sqlite, stored_bytes
from tests.conftest import API_TOKEN, APP_SECRET, PHONE_NUMBER_ID, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import load_sample_json, sign, text_message
from tests.fakes.openai_server import CallTools, FakeOpenAI, function_call_outputs
from tests.helpers import repos_of, wait_handled
from tests.leaks import leaked, request_texts
from tests.reliability.harness import RunPy, server_env
from tests.web.helpers import CATALOGUE, admin, csrf_in, indexed, make_pdf, sign_in, upload_pdf

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
PHONE = "393330000000"  # the customer of Meta's sample payloads
BSUID = "IT.1000000000000000001"  # ... and their business-scoped user id
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
# HTML forms with a CSRF token of their own (double-submit cookie) instead of the session's.
OWN_TOKEN_FORMS = {"/login", "/orders/confirm/{token}"}


def _routes(app: web.Application) -> list[tuple[str, str, str]]:
    """(method, canonical path, a concrete path) of every route, HEAD excepted."""
    found = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        canonical = route.resource.canonical
        if isinstance(route.resource, web.StaticResource):
            concrete = "/static/style.css"
        else:
            concrete = re.sub(r"\{[^}]+\}", "1", canonical)
            if canonical == "/orders/confirm/{token}":
                concrete = "/orders/confirm/" + "A" * 43  # well formed, unknown
        found.append((route.method, canonical, concrete))
    return found


async def _refused(resp: aiohttp.ClientResponse) -> bool:
    """Refused for want of credentials: 401/403, or a redirect to the sign-in page."""
    if resp.status in (301, 302, 303):
        return resp.headers.get("Location", "").startswith("/login")
    return resp.status in (401, 403)


# -- webhook signatures ---------------------------------------------------------------------------------------------
async def test_forged_signatures_are_refused_and_store_nothing(client: TestClient) -> None:
    body = orjson.dumps(text_message("wamid.SIG1", PHONE, "hello"))
    good = sign(body, APP_SECRET)
    digest = good.removeprefix("sha256=")
    forged = {
        "no header": None,
        "empty header": "",
        "another secret": sign(body, "not-the-app-secret"),
        "signature of another body": sign(body + b" ", APP_SECRET),
        "sha1 prefix": "sha1=" + digest,
        "no prefix": digest,
        "upper-case prefix": "SHA256=" + digest,
        "upper-case hex": "sha256=" + digest.upper(),
        "one digit short": good[:-1],
        "one digit more": good + "0",
        "twice": f"{good},{good}",
        "space after the prefix": "sha256= " + digest,
        "non-hex": "sha256=" + "g" * 64,
        "latin-1 character": good[:-1] + "é",
    }
    for what, header in forged.items():
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["X-Hub-Signature-256"] = header
        resp = await client.post("/webhooks/whatsapp", data=body, headers=headers)
        assert resp.status in (401, 403), (what, resp.status)
    # A body changed after signing is not the body that was signed.
    tampered = body.replace(b"hello", b"HELLO")
    resp = await client.post("/webhooks/whatsapp", data=tampered, headers={"X-Hub-Signature-256": good})
    assert resp.status == 403
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM inbox") == 0


async def test_without_an_app_secret_every_post_is_refused(make_client: ClientFactory) -> None:
    client = await make_client(whatsapp_app_secret="")
    body = orjson.dumps(text_message("wamid.NOSECRET", PHONE, "hello"))
    for header in (sign(body, ""), sign(body, APP_SECRET)):
        resp = await client.post("/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": header})
        assert resp.status == 403
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM inbox") == 0


async def test_a_replayed_delivery_is_accepted_but_stored_and_answered_once(
    client: TestClient, fake_graph: FakeGraph
) -> None:
    body = orjson.dumps(text_message("wamid.REPLAY", PHONE, "replayed question"))
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, APP_SECRET)}
    statuses = await asyncio.gather(*(client.post("/webhooks/whatsapp", data=body, headers=headers)
                                      for _ in range(5)))
    assert [r.status for r in statuses] == [200] * 5
    await fake_graph.wait_for_sent(1)
    await wait_handled(client, 1)
    for _ in range(3):  # replayed later too
        assert (await client.post("/webhooks/whatsapp", data=body, headers=headers)).status == 200
    await asyncio.sleep(0.2)
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM inbox") == 1
    assert fake_graph.texts() == ["Echo: replayed question"]


async def test_the_verify_handshake_needs_the_exact_token(client: TestClient) -> None:
    for token in ("", "test-verify-toke", "test-verify-token ", "TEST-VERIFY-TOKEN"):
        resp = await client.get("/webhooks/whatsapp", params={
            "hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "42"})
        assert resp.status == 403, token


# -- authentication on every route ------------------------------------------------------------------------------------
async def test_every_route_refuses_strangers_except_the_public_ones(client: TestClient) -> None:
    app = client.app
    assert app is not None
    strangers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Cookie": f"{SESSION_COOKIE}=forged-session-token"},
    ]
    open_routes: set[tuple[str, str]] = set()
    checked = 0
    for method, canonical, path in _routes(app):
        methods = ["GET", "POST", "PUT", "DELETE"] if method == "*" else [method]
        for verb in methods:
            for headers in strangers:
                client.session.cookie_jar.clear()
                resp = await client.request(verb, path, headers=headers, allow_redirects=False)
                checked += 1
                if not await _refused(resp):
                    open_routes.add((verb, canonical))
                elif path.startswith("/api/") or path == "/metrics":
                    assert resp.status in (401, 403), (verb, path)  # JSON clients get JSON, not a redirect
                    assert resp.content_type == "application/json"
    assert open_routes <= PUBLIC, sorted(open_routes - PUBLIC)
    assert checked > 100


async def test_a_bearer_token_opens_the_api_but_not_the_html_pages(client: TestClient) -> None:
    assert (await client.get("/api/conversations", headers=BEARER)).status == 200
    assert (await client.get("/metrics", headers=BEARER)).status == 200
    for page in ("/ai-diagnostics", "/inbox", "/settings"):
        resp = await client.get(page, headers=BEARER, allow_redirects=False)
        assert await _refused(resp), page


async def test_operators_are_refused_every_admin_route(client: TestClient) -> None:
    await client.app[ACCESS].add_user("operatore", "operator", "a-long-operator-password")
    resp = await sign_in(client, "operatore", "a-long-operator-password")
    assert resp.status == 303
    csrf = csrf_in(await (await client.get("/inbox")).text())
    admin_routes = [(m, p) for m, c, p in _routes(client.app) if c in ("/settings", "/ai-diagnostics/reset-sessions")
                    or c.startswith(("/settings/", "/api/settings"))]
    assert len(admin_routes) >= 6
    for method, path in admin_routes:
        resp = await client.request(method, path, headers={"X-CSRF-Token": csrf}, allow_redirects=False)
        assert resp.status == 403, (method, path, resp.status)
    assert (await client.get("/inbox")).status == 200  # the operator's own pages still open


async def test_every_api_answer_is_kept_out_of_caches_and_never_sniffed(client: TestClient) -> None:
    api_routes = [(m, p) for m, c, p in _routes(client.app) if c.startswith("/api/")]
    assert len(api_routes) >= 10
    checked = 0
    for method, path in api_routes:
        for headers in (BEARER, {}):  # answered, and refused for want of a token
            resp = await client.request(method, path, headers=headers, data=b"{}" if method != "GET" else None)
            assert resp.headers.get("X-Content-Type-Options") == "nosniff", (method, path, resp.status)
            if path.startswith("/api/media/") and resp.status == 200:
                continue  # the media proxy's own caching (checked in test_inbox)
            assert resp.headers.get("Cache-Control") == "no-store", (method, path, resp.status)
            checked += 1
    resp = await client.get("/api/no-such-thing", headers=BEARER)
    assert resp.status == 404 and resp.headers["Cache-Control"] == "no-store"
    assert checked >= 20


async def test_no_route_serves_the_database_or_files_outside_static(client: TestClient) -> None:
    await admin(client)
    for path in ("/bot.db", "/data/bot.db", "/static/../data/bot.db", "/static/..%2f..%2fdata%2fbot.db",
                 "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/../../run.py", "/static/..\\..\\run.py"):
        resp = await client.get(path, allow_redirects=False)
        body = await resp.read()
        assert resp.status in (302, 400, 403, 404), (path, resp.status)
        assert not body.startswith(b"SQLite format 3")
        assert b"[build-system]" not in body and b"from bot.cli import main" not in body


# -- CSRF on every form -----------------------------------------------------------------------------------------------
async def test_every_form_post_without_its_csrf_token_is_refused(client: TestClient) -> None:
    csrf = await admin(client)
    forms = [(c, p) for m, c, p in _routes(client.app)
             if m == "POST" and not c.startswith(("/api/", "/webhooks/")) and c not in OWN_TOKEN_FORMS]
    assert {"/logout", "/settings", "/ai-diagnostics/reset-sessions"} <= {c for c, _ in forms}
    for canonical, path in forms:
        for data in ({"confirm": "yes"}, {"confirm": "yes", "csrf_token": "forged"},
                     {"confirm": "yes", "csrf_token": csrf[:-2]}):
            resp = await client.post(path, data=data, allow_redirects=False)
            assert resp.status == 403, (canonical, data, resp.status)
        multipart = aiohttp.FormData()
        multipart.add_field("pdf", make_pdf(["x"]), filename="x.pdf", content_type="application/pdf")
        resp = await client.post(path, data=multipart, allow_redirects=False)
        assert resp.status == 403, (canonical, "multipart", resp.status)
    # Still signed in, nothing was reset or saved: the session was never closed by a forged logout.
    assert (await client.get("/ai-diagnostics", allow_redirects=False)).status == 200
    # JSON calls made with a session need the token in a header, like the inbox's own scripts send it.
    for method, path in (("POST", f"/api/conversations/{PHONE}/pause"), ("PUT", "/api/settings"),
                         ("POST", "/api/test-chat/messages")):
        resp = await client.request(method, path, data=b'{"text": "x", "model": "gpt-4o"}',
                                    headers={"Content-Type": "application/json"})
        assert resp.status == 403, (method, path, resp.status)


async def test_forms_with_their_own_token_refuse_a_missing_one(client: TestClient) -> None:
    resp = await client.post("/login", data={"username": "admin", "password": "test-admin-password"},
                             allow_redirects=False)
    assert resp.status == 403
    resp = await client.post("/orders/confirm/" + "A" * 43, data={}, allow_redirects=False)
    assert resp.status == 403


# -- uploads ----------------------------------------------------------------------------------------------------------
async def test_an_upload_named_with_a_path_stays_in_the_data_directory(client: TestClient, tmp_path: Path) -> None:
    csrf = await admin(client)
    data_dir = tmp_path / "data"
    before = {p for p in tmp_path.rglob("*")}
    for name in ("../../evil.pdf", "..\\..\\evil.pdf", "/etc/evil.pdf", "%2e%2e%2fevil.pdf", "kb/../../evil.pdf"):
        resp = await upload_pdf(client, csrf, make_pdf([*CATALOGUE, name]), filename=name)
        assert resp.status == 303, (name, resp.status)
        await indexed(client)
        doc = await repos_of(client).knowledge.get()
        assert doc is not None and doc.filename.endswith("evil.pdf"), doc
        assert "/" not in doc.filename and "\\" not in doc.filename, doc.filename  # shown as a name, not a path
    created = {p for p in tmp_path.rglob("*")} - before
    assert created, "the upload was stored somewhere"
    for path in created:
        assert path.resolve().is_relative_to(data_dir.resolve()), path
    assert not any(p.name == "evil.pdf" for p in tmp_path.rglob("*"))
    assert not Path("/etc/evil.pdf").exists()


# -- XSS --------------------------------------------------------------------------------------------------------------
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


async def test_customer_and_attacker_text_is_escaped_in_the_operator_pages(
    client: TestClient, fake_graph: FakeGraph
) -> None:
    await post_webhook(client, text_message("wamid.XSS1", PHONE, IMG, name=SCRIPT))
    await fake_graph.wait_for_sent(1)
    # A stranger can put text in the audit log (a failed sign-in), and errors can quote outside text.
    resp = await sign_in(client, username=f"{SCRIPT}{IMG}", password="wrong-password")
    assert resp.status == 401
    await repos_of(client).errors.record("graph_error", f"Meta said: {IMG} {SCRIPT}")
    csrf = await admin(client)
    assert (await upload_pdf(client, csrf, make_pdf(CATALOGUE), filename=f"{SCRIPT}.pdf")).status == 303
    await indexed(client)
    pages = ["/ai-diagnostics", "/inbox", "/settings"]
    for page in pages:
        resp = await client.get(page)
        assert resp.status == 200
        html = await resp.text()
        for raw in (SCRIPT, IMG, "<img src=x", "<script>alert"):
            assert raw not in html, (page, raw)
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    diagnostics = await (await client.get("/ai-diagnostics")).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in diagnostics  # shown, as text
    # The inbox shows customers' names and messages through its script, which only ever sets textContent.
    thread = await client.get(f"/api/conversations/{PHONE}/messages", headers=BEARER)
    assert thread.content_type == "application/json"
    assert IMG in {m["text"] for m in (await thread.json())["messages"]}


def test_the_page_scripts_never_write_html() -> None:
    static = Path(__file__).resolve().parents[1] / "bot" / "web" / "static"
    scripts = sorted(static.glob("*.js"))
    assert scripts
    for script in scripts:
        source = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in source, (script.name, sink)


# -- SQL injection ----------------------------------------------------------------------------------------------------
INJECTIONS = ["' OR 1=1 --", "' OR '1'='1", "\" OR \"\"=\"", "1; DROP TABLE inbox; --", "%' --", "') OR ('a'='a",
              "x' UNION SELECT * FROM users --", "\\", "'", "\x00", "name:pane", "pane OR 1", "NEAR(pane olio)",
              "\"pane", "pane*", "-pane", "^pane", "pane AND NOT olio", "{pane}"]


def _like(query: str, value: str | None) -> bool:
    # What the contact search promises: a case-insensitive "contains" of the words as typed (% and _ are not
    # wildcards).
    needle = query.replace("\x00", "").strip().replace("%", "").replace("_", "").lower()
    return value is not None and needle in value.lower()


def _full_text(query: str, name: str, number: str) -> bool:
    # What the conversation search promises: every word (letters and digits) starts a word of the name or number,
    # or a number-like query is part of the number; punctuation alone finds nothing, an empty query everything.
    text = query.replace("\x00", "").strip()
    if not text:
        return True
    digits = "".join(ch for ch in text if ch.isdigit())
    if re.fullmatch(r"\+?[\d\s().\-/]+", text) and len(digits) >= 3 and digits in number:
        return True
    words = re.findall(r"[^\W_]+", text.lower())
    tokens = re.findall(r"[^\W_]+", f"{name} {number}".lower())
    return bool(words) and all(any(t.startswith(w) for t in tokens) for w in words)


async def test_conversation_and_contact_search_treat_sql_as_text(client: TestClient, fake_graph: FakeGraph) -> None:
    names = {"393331110000": "Mario Rossi", "393331110001": "Sean O'Brien", "393331110002": "Anna Bianchi"}
    for n, (number, name) in enumerate(names.items()):
        await post_webhook(client, text_message(f"wamid.SQL{n}", number, "ciao", name=name))
    await fake_graph.wait_for_sent(3)
    await wait_handled(client, 3)
    for path, key in (("/api/conversations", "conversations"), ("/api/contacts", "contacts")):
        for query in [*INJECTIONS, "O'Brien", "rossi", "3331110002", "rossi\x00zzz"]:
            resp = await client.get(path, params={"q": query}, headers=BEARER)
            assert resp.status == 200, (path, query, resp.status)
            found = sorted(c["name"] for c in (await resp.json())[key])
            if key == "conversations":
                expected = sorted(name for number, name in names.items() if _full_text(query, name, number))
            else:
                expected = sorted(name for number, name in names.items() if _like(query, name) or _like(query, number))
            assert found == expected, (path, query)
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM inbox") == 3
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM conversations") == 3


def _folded(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(ch))


async def test_product_search_tool_treats_sql_and_fts_syntax_as_words(
    client: TestClient, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    catalogue = (Path(__file__).resolve().parents[1] / "bot" / "samples" / "sample_products.csv").read_text("utf-8")
    await repos_of(client).products.upsert_many(parse_catalogue(catalogue).products)
    fake_openai.script.append(CallTools([("search_products", {"query": q, "limit": 20}) for q in INJECTIONS]))
    await post_webhook(client, text_message("wamid.FTS", PHONE, "cerco del pane"))
    await fake_graph.wait_for_sent(1)
    outputs = list(function_call_outputs(fake_openai.responses_requests()[1]).values())
    assert len(outputs) == len(INJECTIONS)
    total = await repos_of(client).products.count()
    for query, output in zip(INJECTIONS, outputs, strict=True):
        assert "error" not in output.lower() or "products" in output, (query, output)
        result: dict[str, Any] = orjson.loads(output)
        words = [_folded(w) for w in re.findall(r"\w+", query)]
        assert len(result.get("products", [])) < total, query  # never the whole catalogue
        for product in result.get("products", []):
            haystack = re.findall(r"\w+", _folded(f"{product['sku']} {product['name']} {product['description']}"))
            assert any(h.startswith(w) for w in words for h in haystack), (query, product["name"])


# -- no customer phone number reaches OpenAI --------------------------------------------------------------------------
TOOL_MODULE = '''
from bot.tools import ToolContext, tool


@tool
async def customer_number(ctx: ToolContext) -> str:
    """The customer's number, as a careless tool might return it."""
    number = ctx.contact.wa_id or ""
    return f"wa_id {number}, +{number[:2]} {number[2:5]} {number[5:8]} {number[8:]}, 0{number[2:]}"
'''


def _number_forms(number: str) -> re.Pattern[str]:
    """The national part of a number written with any separators (the country code is optional)."""
    national = number[2:]
    return re.compile(r"[\s\-./()\u00a0]*".join(national))


def _without_images(traffic: str) -> str:
    # Base64 pictures are noise: a digit run inside them is not a phone number.
    return re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "data:image", traffic)


def _with_customer(name: str, payload: dict[str, Any], mutate: Any) -> dict[str, Any]:
    value = payload["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["profile"]["name"] = name
    mutate(value["messages"][0])
    return payload


async def test_no_form_of_the_customer_number_reaches_openai(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph, tmp_path: Path
) -> None:
    tools_dir = tmp_path / "my_tools"
    tools_dir.mkdir()
    (tools_dir / "numbers.py").write_text(TOOL_MODULE, encoding="utf-8")
    client = await make_client(tools_path=(str(tools_dir),))
    name = "Mario +39 333 000 0000"  # some people put their number in their profile name
    fake_graph.add_media("1000000000000101", b"\xff\xd8\xff\xe0 a picture, no digits", "image/jpeg")
    fake_graph.add_media("1000000000000102", b"OggS an opus voice note, no digits", "audio/ogg")
    fake_openai.transcript = "richiamami al tre tre tre, cioe 333 000 0000, oppure +39 3330000000"
    card = {"name": {"formatted_name": "Me"}, "phones": [{"phone": "+39 333 000 0000", "wa_id": PHONE}]}
    conversation = [
        text_message("wamid.P1", PHONE, "il mio numero: +39 333 000 0000, 0039-333-0000000, (333) 000-0000",
                     name=name, user_id=BSUID),
        _with_customer(name, load_sample_json("audio_voice"), lambda m: None),
        _with_customer(name, load_sample_json("image"), lambda m: m["image"].update(caption="scrivimi al 3330000000")),
        _with_customer(name, load_sample_json("contacts"), lambda m: m["contacts"].append(card)),
        _with_customer(name, load_sample_json("location"),
                       lambda m: m["location"].update(name="Casa, tel. 333.000.0000")),
    ]
    for n, payload in enumerate(conversation, start=1):
        assert (await post_webhook(client, payload)).status == 200
        await fake_graph.wait_for_sent(n)
    # Tools: one stores what the customer said (and returns it), one returns the number outright.
    fake_openai.script.append(CallTools([("update_contact", {"notes": "chiamare al +39 333 000 0000"}),
                                         ("customer_number", {})]))
    last = text_message("wamid.P9", PHONE, "segnati il mio numero", name=name, user_id=BSUID)
    assert (await post_webhook(client, last)).status == 200
    await fake_graph.wait_for_sent(len(conversation) + 1)
    requests = fake_openai.responses_requests()
    assert any(function_call_outputs(r) for r in requests), "the tools ran"
    assert fake_openai.transcriptions, "the voice note was transcribed"
    traffic = _without_images(fake_openai.all_traffic_text())
    shared = load_sample_json("contacts")["entry"][0]["changes"][0]["value"]["messages"][0]["contacts"][0]
    for number in (PHONE, *(re.sub(r"\D", "", p["phone"]) for p in shared["phones"])):
        found = _number_forms(number).search(traffic)
        assert found is None, f"{number} reached OpenAI as {found.group(0)!r}"
    assert "[phone number removed]" in traffic
    # The customer still got answers to everything.
    assert len(fake_graph.texts_to(PHONE)) == len(conversation) + 1


REVIEWED = "393331234567"  # the customer of the security review's reproductions
# How the review got the number past the old redaction: other scripts, other separators, the tail alone.
REVIEW_FORMS = [
    "３３３１２３４５６７", "٣٣٣١٢٣٤٥٦٧", "۳۳۳۱۲۳۴۵۶۷", "३३३१२३४५६७", "333–123–4567", "333\u2011123\u20114567",
    "333\u2212123\u22124567", "333\u200b123\u200b4567", "333\u20601234567", "333\u00ad123\u00ad4567", "333_123_4567",
    "333,123,4567", "333·123·4567", "333*123*4567", "333:123:4567", "1234567", "31234567",
]


async def test_the_reviews_reproductions_never_reach_openai(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    # Each message comes the instant the last reply went, as only a bot could: the loop guard is off here.
    client = await make_client(loop_reply_seconds=0)
    # The customer writes their number every way the review found, and their profile name holds it in
    # fullwidth digits.
    name = "Mario ３３３ １２３ ４５６７"
    for n, form in enumerate(REVIEW_FORMS):
        body = f"il mio numero è {form}, richiamami"
        assert (await post_webhook(client, text_message(f"wamid.R{n}", REVIEWED, body, name=name))).status == 200
        await fake_graph.wait_for_sent(n + 1)
    # update_contact saves notes holding the number, and returns them (with the profile name) to the model;
    # a later call returns those saved notes again, next to new ones.
    fake_openai.script.append(CallTools([("update_contact", {"notes": "richiamare al 333\u2011123\u20114567"})]))
    assert (await post_webhook(client, text_message("wamid.R90", REVIEWED, "segnatelo", name=name))).status == 200
    fake_openai.script.append(CallTools([("update_contact", {"notes": "preferisce la mattina"})]))
    assert (await post_webhook(client, text_message("wamid.R91", REVIEWED, "e poi", name=name))).status == 200
    await fake_graph.wait_for_sent(len(REVIEW_FORMS) + 2)
    contact = await repos_of(client).contacts.for_conversation(PHONE_NUMBER_ID, REVIEWED)
    assert contact is not None and "333\u2011123\u20114567" in (contact.notes or "")  # stored as said
    outputs = [o for r in fake_openai.responses_requests() for o in function_call_outputs(r).values()]
    assert len(outputs) == 2 and all('"name"' in o and "notes" in o for o in outputs)
    traffic = request_texts(fake_openai.requests)
    assert leaked(traffic, [REVIEWED]) == [], "the customer's number reached OpenAI"
    assert traffic.count("[phone number removed]") >= len(REVIEW_FORMS) + 2
    assert "preferisce la mattina" in outputs[1] and "richiamare al [phone number removed]" in outputs[1]


# -- secrets: logs, files, the database -------------------------------------------------------------------------------
SECRETS = {
    "OPENAI_API_KEY": "sk-proj-ENVKEY-0123456789abcdefghijklmnop-QRST",
    "WHATSAPP_ACCESS_TOKEN": "EAAG-wa-access-token-0123456789-secret",
    "WHATSAPP_APP_SECRET": "app-secret-0123456789abcdef-security-test",
    "WHATSAPP_VERIFY_TOKEN": "verify-token-0123456789-security-test",
    "BOT_ADMIN_PASSWORD": "admin-password-Security-Test-42",
    "BOT_API_TOKEN": "api-token-0123456789-security-test-xyz",
}
STORED_KEY = "sk-proj-STOREDKEY-9876543210zyxwvutsrqponm-ABCD"
CUSTOMER = "393471234567"


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)) or ".": stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


async def test_secrets_and_numbers_stay_out_of_logs_and_files(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    fake_graph.expected_token = SECRETS["WHATSAPP_ACCESS_TOKEN"]
    fake_openai.expected_api_key = SECRETS["OPENAI_API_KEY"]
    server = RunPy(data_dir=tmp_path / "data", env=server_env(fake_openai, fake_graph, **SECRETS),
                   log_path=tmp_path / "server.log")
    await server.start()
    try:
        bearer = {"Authorization": f"Bearer {SECRETS['BOT_API_TOKEN']}"}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            for n, text in enumerate(["buongiorno, il mio numero è 347 123 4567", "ancora io"]):
                if n == 1:  # the model passes the number on as an "email": the refusal quotes it
                    fake_openai.script.append(CallTools([("update_contact", {"email": "347_123_4567"})]))
                body = orjson.dumps(text_message(f"wamid.SEC{n}", CUSTOMER, text, name="Giulia"))
                async with http.post(server.url(), data=body, headers={
                        "X-Hub-Signature-256": sign(body, SECRETS["WHATSAPP_APP_SECRET"])}) as resp:
                    assert resp.status == 200
                await fake_graph.wait_for_sent(n + 1, timeout=20)
            async with http.post(server.url(), data=b"{}", headers={"X-Hub-Signature-256": "sha256=00"}) as resp:
                assert resp.status == 403
            async with http.get(server.url(), params={"hub.mode": "subscribe", "hub.challenge": "1",
                                                      "hub.verify_token": SECRETS["WHATSAPP_VERIFY_TOKEN"]}) as resp:
                assert resp.status == 200
            # Refused API calls are logged; the path holds the customer's number.
            async with http.get(server.url(f"/api/conversations/{CUSTOMER}/messages"),
                                headers={"Authorization": "Bearer not-the-token"}) as resp:
                assert resp.status == 401
            change = orjson.dumps({"openai_api_key": STORED_KEY, "use_stored_settings": False})
            async with http.put(server.url("/api/settings"), headers=bearer, data=change) as resp:
                assert resp.status == 200, await resp.text()
                assert STORED_KEY not in await resp.text()
            async with http.get(server.url("/api/settings"), headers=bearer) as resp:
                assert STORED_KEY not in await resp.text()
            for password in ("wrong-password-attempt", SECRETS["BOT_ADMIN_PASSWORD"]):
                async with http.get(server.url("/login")) as login:
                    token = re.search(r'name="csrf_token" value="([^"]+)"', await login.text())
                assert token is not None
                async with http.post(server.url("/login"), allow_redirects=False, data={
                        "username": "admin", "password": password, "csrf_token": token.group(1)}) as resp:
                    assert resp.status in (303, 401)
            async with http.get(server.url("/ai-diagnostics")) as resp:
                page = await resp.text()
                assert resp.status == 200
                for secret in (*SECRETS.values(), STORED_KEY):
                    assert secret not in page
            modes_running = _modes(server.data_dir)
            stored = stored_bytes(server.data_dir)
    finally:
        await server.stop()
    modes_stopped = _modes(server.data_dir)
    stored += stored_bytes(server.data_dir)
    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "reply_sent" in log and "turn_finished" in log  # the log is the real one
    for name, secret in (*SECRETS.items(), ("stored OpenAI key", STORED_KEY)):
        assert secret not in log, f"{name} is in the server log"
    for number in (CUSTOMER, CUSTOMER[2:], "347 123 4567"):
        assert number not in log, f"the customer's number {number} is in the server log"
    assert "+39******4567" in log  # numbers are logged masked
    assert "tool_refused" in log and "347_123_4567" not in log and "+34****4567" in log
    for name, secret in (("stored OpenAI key", STORED_KEY), ("admin password", SECRETS["BOT_ADMIN_PASSWORD"]),
                         ("API token", SECRETS["BOT_API_TOKEN"])):
        assert secret.encode() not in stored, f"the {name} is in the database in clear"
    for modes in (modes_running, modes_stopped):
        for path, mode in modes.items():
            is_dir = (server.data_dir / path).is_dir()
            assert mode == (0o700 if is_dir else 0o600), f"{path} is {oct(mode)}"
    assert "secret.key" in modes_stopped
    if on_sqlite():
        assert {"bot.db", "secret.key"} <= set(modes_stopped)
        assert {"bot.db-wal", "bot.db-shm"} <= set(modes_running)


async def test_files_are_private_even_with_an_open_umask(tmp_path: Path, fake_openai: FakeOpenAI,
                                                          fake_graph: FakeGraph) -> None:
    # A data directory made by hand beforehand, too open, is tightened; files are 0600 whatever the umask.
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    server = RunPy(data_dir=data, env=server_env(fake_openai, fake_graph), log_path=tmp_path / "server.log")
    old = os.umask(0)  # inherited by the child process
    try:
        await server.start()
    finally:
        os.umask(old)
    try:
        body = orjson.dumps(text_message("wamid.UMASK", CUSTOMER, "ciao"))
        async with aiohttp.ClientSession() as http, http.post(
                server.url(), data=body, headers={"X-Hub-Signature-256": sign(body, APP_SECRET)}) as resp:
            assert resp.status == 200
        await fake_graph.wait_for_sent(1, timeout=20)
        running = _modes(data)
    finally:
        await server.stop()
    for path, mode in running.items():
        assert mode == (0o700 if (data / path).is_dir() else 0o600), f"{path} is {oct(mode)} with umask 000"
