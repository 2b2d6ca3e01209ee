"""The webhook contract: handshake, signatures, malformed bodies, batches, duplicates, statuses."""

from __future__ import annotations

import gzip
import time

import orjson
import pytest
from aiohttp.test_utils import TestClient

from bot.domain.conversation import ConversationKey, OutboundMessage
from bot.persistence.outbox import sending_stmt, sent_stmts
from bot.persistence.sqlite import SQLiteDatabase
from bot.web.keys import INGEST
from tests.conftest import APP_SECRET, VERIFY_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import load_sample, sign, status_update, text_message
from tests.helpers import inbox_statuses, raw_http, repos_of, wait_handled, wait_sent


async def test_handshake_echoes_challenge(client: TestClient) -> None:
    resp = await client.get(
        "/webhooks/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"},
    )
    assert resp.status == 200
    assert await resp.text() == "1158201444"


async def test_handshake_refuses_wrong_token_or_mode(client: TestClient) -> None:
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {},
    ):
        resp = await client.get("/webhooks/whatsapp", params=params)
        assert resp.status == 403


async def test_missing_and_wrong_signatures_store_nothing(client: TestClient) -> None:
    body = load_sample("text")
    resp = await client.post("/webhooks/whatsapp", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 401
    resp = await client.post(
        "/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": sign(body, "wrong-secret")}
    )
    assert resp.status == 403
    resp = await client.post("/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": "sha1=abc"})
    assert resp.status == 403
    # A signature over a re-serialised copy is not a signature over the bytes sent.
    other = orjson.dumps(orjson.loads(body))
    resp = await client.post("/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": sign(other, "x")})
    assert resp.status == 403
    assert await inbox_statuses(client) == {}


async def test_malformed_bodies_get_400_never_500(client: TestClient) -> None:
    bad_bodies: list[bytes] = [
        b"",
        b"not json",
        b"{",
        b"[]",
        b'"string"',
        b"{}",
        b'{"object": "page", "entry": []}',
        b'{"object": "whatsapp_business_account", "entry": "nope"}',
        b'{"object": "whatsapp_business_account", "entry": [1]}',
        b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", '
        b'"value": {"metadata": {"phone_number_id": "1"}, "messages": [{"type": "text"}]}}]}]}',
    ]
    for body in bad_bodies:
        resp = await post_webhook(client, body)
        assert resp.status == 400, body
        assert "error" in await resp.json()
    assert await inbox_statuses(client) == {}
    assert (await client.get("/healthz")).status == 200


def _head(body: bytes, *extra: bytes, length: int | None = None) -> bytes:
    lines = [b"POST /webhooks/whatsapp HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/json",
             b"Content-Length: %d" % (len(body) if length is None else length), *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def test_signature_headers_with_odd_bytes_or_sizes_get_4xx(client: TestClient) -> None:
    body = load_sample("text")
    good = sign(body, APP_SECRET).encode()
    for header in (
        good[:-2] + b"\xff\xfe",  # not UTF-8: arrives as surrogate escapes
        b"sha256=" + "é".encode() * 32,  # the right length in characters, not ASCII
        good + b"\xc3",
        b"sha256=" + b"a" * 8000,  # absurd, but within aiohttp's 8190-byte header limit
        b"\x00" * 71,
    ):
        status = await raw_http(client, _head(body, b"X-Hub-Signature-256: " + header) + body)
        assert status in (400, 401, 403), (header[:20], status)
    status = await raw_http(client, _head(body, b"X-Hub-Signature-256: sha256=" + b"a" * 9000) + body)
    assert status == 400  # past the header limit: aiohttp refuses it itself
    assert await inbox_statuses(client) == {}
    assert (await client.get("/healthz")).status == 200


async def test_bad_or_unknown_content_encodings_get_400_or_415(client: TestClient) -> None:
    body = load_sample("text")
    signature = {"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"}
    resp = await client.post("/webhooks/whatsapp", data=body, headers={**signature, "Content-Encoding": "gzip"})
    assert resp.status == 400
    assert "not valid gzip" in (await resp.json())["error"]
    resp = await client.post("/webhooks/whatsapp", data=b"\x78\x9c garbage",
                             headers={**signature, "Content-Encoding": "deflate"})
    assert resp.status == 400
    for encoding in ("compress", "x-unknown", "gzip, gzip", "\u00e9"):
        resp = await client.post("/webhooks/whatsapp", data=body, headers={**signature, "Content-Encoding": encoding})
        assert resp.status == 415, encoding
        assert "not supported" in (await resp.json())["error"]
    for encoding in ("br", "zstd"):  # aiohttp refuses these itself (400) unless their library is installed
        resp = await client.post("/webhooks/whatsapp", data=body, headers={**signature, "Content-Encoding": encoding})
        assert resp.status in (400, 415), encoding
    assert await inbox_statuses(client) == {}
    # Real gzip is decoded, and the signature is over what it decodes to.
    resp = await client.post("/webhooks/whatsapp", data=gzip.compress(body),
                             headers={**signature, "Content-Encoding": "gzip"})
    assert resp.status == 200
    assert len(await inbox_statuses(client)) == 1


async def test_a_body_that_stops_arriving_gets_408(make_client: ClientFactory) -> None:
    client = await make_client(body_timeout_seconds=0.3)
    body = load_sample("text")
    started = time.monotonic()
    # Content-Length promises more than is sent, and the connection stays open.
    status = await raw_http(client, _head(body, length=len(body) + 100) + body)
    assert status == 408
    assert time.monotonic() - started < 5
    assert await inbox_statuses(client) == {}


async def test_one_message_gets_one_reply(client: TestClient, fake_graph: FakeGraph) -> None:
    resp = await post_webhook(client, load_sample("text"))
    assert resp.status == 200
    sent = await fake_graph.wait_for_sent(1)
    assert sent[0]["to"] == "393330000000"
    assert sent[0]["text"]["body"] == "Echo: Ciao, avete ancora la borsa rossa?"
    assert (await wait_handled(client, 1)) == {"wamid.TEST_IN_TEXT_0001": "done"}


async def test_persisted_before_the_200(client: TestClient) -> None:
    resp = await post_webhook(client, load_sample("text"))
    assert resp.status == 200
    # Right after the 200, before any AI work could finish, the row is already durable.
    assert "wamid.TEST_IN_TEXT_0001" in await inbox_statuses(client)


async def test_duplicate_deliveries_never_reply_twice(client: TestClient, fake_graph: FakeGraph) -> None:
    body = load_sample("text")
    for _ in range(3):
        assert (await post_webhook(client, body)).status == 200
    await fake_graph.wait_for_sent(1)
    # A later, different message proves the pipeline moved on; the duplicate got nothing.
    await post_webhook(client, text_message("wamid.LATER", "393330000000", "ancora una domanda"))
    await fake_graph.wait_for_sent(2)
    await wait_handled(client, 2)
    assert fake_graph.texts() == ["Echo: Ciao, avete ancora la borsa rossa?", "Echo: ancora una domanda"]
    count = await repos_of(client).db.fetchval("SELECT COUNT(*) FROM inbox")
    assert count == 2


async def test_every_entry_and_change_of_a_batch_is_handled(client: TestClient, fake_graph: FakeGraph) -> None:
    assert (await post_webhook(client, load_sample("multi_entry"))).status == 200
    await fake_graph.wait_for_sent(2)
    statuses = await wait_handled(client, 2)
    assert len(statuses) == 2
    recipients = sorted(m["to"] for m in fake_graph.sent)
    assert len(set(recipients)) == 2


async def test_statuses_never_downgrade(client: TestClient, fake_graph: FakeGraph) -> None:
    await post_webhook(client, load_sample("text"))
    sent = await fake_graph.wait_for_sent(1)
    repos = repos_of(client)
    row = (await wait_sent(client, 1))[0]
    assert row["status"] == "sent"
    wamid = row["wamid"]
    assert sent
    for status in ("read", "delivered", "sent"):
        assert (await post_webhook(client, status_update(wamid, status, "393330000000"))).status == 200
    assert await repos.db.fetchval("SELECT status FROM outbox WHERE wamid = $1", wamid) == "read"


async def test_failed_status_keeps_code_and_reason(client: TestClient, fake_graph: FakeGraph) -> None:
    await post_webhook(client, load_sample("text"))
    await fake_graph.wait_for_sent(1)
    repos = repos_of(client)
    wamid = (await wait_sent(client, 1))[0]["wamid"]
    errors = [{"code": 131047, "title": "Re-engagement message", "error_data": {"details": "24 hours passed"}}]
    await post_webhook(client, status_update(wamid, "failed", "393330000000", errors=errors))
    row = await repos.db.fetchrow("SELECT status, error_code, error_reason FROM outbox WHERE wamid = $1", wamid)
    assert row is not None
    assert (row["status"], row["error_code"], row["error_reason"]) == ("failed", 131047, "24 hours passed")


async def test_status_before_our_send_is_recorded_is_applied_later(client: TestClient) -> None:
    repos = repos_of(client)
    await post_webhook(client, status_update("wamid.EARLY", "delivered", "393330000000"))
    ids = await repos.outbox.enqueue(ConversationKey("100000000000001", "393330000000"),
                                     [OutboundMessage("text", "hi")], author="ai")
    await repos.db.write([sending_stmt(ids[0])])
    await repos.db.write(sent_stmts(ids[0], "wamid.EARLY"))
    assert await repos.db.fetchval("SELECT status FROM outbox WHERE id = $1", ids[0]) == "delivered"


async def test_username_only_customer_is_answered_by_recipient(client: TestClient, fake_graph: FakeGraph) -> None:
    await post_webhook(client, load_sample("text_bsuid_only"))
    sent = await fake_graph.wait_for_sent(1)
    assert "to" not in sent[0]
    assert sent[0]["recipient"] == "IT.1000000000000000003"


async def test_non_text_message_is_stored_and_answered_politely(client: TestClient, fake_graph: FakeGraph) -> None:
    await post_webhook(client, load_sample("unsupported"))
    sent = await fake_graph.wait_for_sent(1)
    assert "text" in sent[0]["text"]["body"].lower()
    row = await repos_of(client).db.fetchrow("SELECT type, payload FROM inbox")
    assert row is not None and row["type"] == "unsupported"
    assert orjson.loads(row["payload"])["unsupported"]["type"] == "poll_creation"


@pytest.mark.sqlite_only("a full disk is simulated with PRAGMA max_page_count (tests/test_postgres_outage.py covers "
                         "PostgreSQL)")
async def test_full_database_answers_503_and_loses_nothing_acknowledged(
    client: TestClient, fake_graph: FakeGraph
) -> None:
    repos = repos_of(client)
    assert (await post_webhook(client, text_message("wamid.BEFORE", "393330000000", "prima"))).status == 200
    await fake_graph.wait_for_sent(1)
    await wait_handled(client, 1)
    assert isinstance(repos.db, SQLiteDatabase)
    pages = await repos.db.fetchval("PRAGMA page_count")
    await repos.db.pragma(f"max_page_count = {int(pages)}")
    big = "x" * 50_000  # needs new pages: the "disk" is full
    resp = await post_webhook(client, text_message("wamid.FULL", "393330000000", big))
    assert resp.status == 503
    assert "retry" in (await resp.json())["error"]
    await repos.db.pragma("max_page_count = 1073741823")
    # Meta retries; now it is stored and answered, and what was acknowledged before is intact.
    assert (await post_webhook(client, text_message("wamid.FULL", "393330000000", big))).status == 200
    statuses = await wait_handled(client, 2)
    assert statuses == {"wamid.BEFORE": "done", "wamid.FULL": "done"}


async def test_concurrent_duplicate_deliveries_in_one_commit_group(
    client: TestClient, fake_graph: FakeGraph
) -> None:
    import asyncio

    # Meta retrying while the first delivery is still in flight: the POSTs share one group commit.
    same = text_message("wamid.RACE", "393330000000", "ciao a tutti")
    other = text_message("wamid.OTHER", "393330000001", "buongiorno")
    answers = await asyncio.gather(*(post_webhook(client, body) for body in (same, same, other, same)))
    assert [a.status for a in answers] == [200, 200, 200, 200]
    statuses = await wait_handled(client, 2)
    assert sorted(statuses) == ["wamid.OTHER", "wamid.RACE"]
    await fake_graph.wait_for_sent(2)
    assert sorted(fake_graph.texts()) == ["Echo: buongiorno", "Echo: ciao a tutti"]
    assert client.app is not None
    assert client.app[INGEST].duplicates_seen == 2
