"""The fakes work with the real clients: the openai SDK (over httpx2) and aiohttp."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI

from tests.fakes.graph_server import FakeGraph, GraphFailure
from tests.fakes.meta import (
    dumps,
    load_sample,
    load_sample_json,
    re_engagement_error,
    sign,
    signed,
    status_update,
    text_message,
)
from tests.fakes.openai_server import (
    CallTools,
    EmptyReply,
    Fail,
    FakeOpenAI,
    Hang,
    Incomplete,
    Refusal,
    Reply,
    Step,
)

# Nothing here opens a database: the PostgreSQL half of the suite leaves these to the SQLite half.
pytestmark = pytest.mark.no_database

MODEL = "gpt-test"
PHONE = "393330000000"
TOKEN = "wa-test-token"


@pytest.fixture
async def oai(fake_openai: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    """A real SDK client pointed at the fake, without SDK retries."""
    async with AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session."""
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(token: str = TOKEN) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


# -- FakeOpenAI: responses ------------------------------------------------------------------------------------
async def test_text_reply_parses_in_the_sdk(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    resp = await oai.responses.create(
        model=MODEL, input="ciao", instructions="Be nice", safety_identifier="abc", store=True
    )
    assert resp.id.startswith("resp_")
    assert resp.status == "completed"
    assert resp.output_text == "Echo: ciao"
    assert resp.output[0].type == "message"
    assert resp.usage is not None and resp.usage.total_tokens > 0
    assert resp.model == MODEL
    (body,) = fake_openai.responses_requests()
    assert body["instructions"] == "Be nice" and body["safety_identifier"] == "abc"
    assert fake_openai.requests[0].header("authorization") == "Bearer sk-test"
    assert fake_openai.last_response_ids() == [resp.id]
    assert resp.id in fake_openai.stored
    assert fake_openai.http_statuses == [200]


async def test_echo_uses_only_user_messages_of_item_lists(oai: AsyncOpenAI) -> None:
    resp = await oai.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "context the echo ignores"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "prima"}]},
            {"role": "user", "content": "seconda"},
        ],
    )
    assert resp.output_text == "Echo: prima\nseconda"


async def test_function_call_round_trip(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    tools: Any = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}, "strict": False}]
    fake_openai.script.append(CallTools([("lookup", {"sku": "A1"}), ("stock", {})], text="Controllo"))
    first = await oai.responses.create(model=MODEL, input="avete A1?", tools=tools)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["lookup", "stock"]
    assert json.loads(calls[0].arguments) == {"sku": "A1"}
    assert all(c.call_id.startswith("call_") and (c.id or "").startswith("fc_") for c in calls)
    assert first.output_text == "Controllo"

    outputs: Any = [
        {"type": "function_call_output", "call_id": c.call_id, "output": out}
        for c, out in zip(calls, ["trovato", "3 pezzi"], strict=True)
    ]
    second = await oai.responses.create(model=MODEL, previous_response_id=first.id, input=outputs, tools=tools)
    assert second.output_text == "Done: trovato | 3 pezzi"
    assert second.previous_response_id == first.id
    assert fake_openai.responses_requests()[1]["tools"] == tools


async def test_missing_or_unknown_tool_output_is_a_400(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    fake_openai.script.append(CallTools([("a", {}), ("b", {"x": 1})]))
    first = await oai.responses.create(model=MODEL, input="go")
    call_ids = [item.call_id for item in first.output if item.type == "function_call"]
    only_one: Any = [{"type": "function_call_output", "call_id": call_ids[0], "output": "ok"}]
    with pytest.raises(openai.BadRequestError) as missing:
        await oai.responses.create(model=MODEL, previous_response_id=first.id, input=only_one)
    assert missing.value.param == "input" and missing.value.type == "invalid_request_error"
    assert f"No tool output found for function call {call_ids[1]}" in missing.value.message

    bogus: Any = [{"type": "function_call_output", "call_id": "call_bogus", "output": "?"}]
    with pytest.raises(openai.BadRequestError) as unknown:
        await oai.responses.create(model=MODEL, input=bogus)
    assert "call_bogus" in unknown.value.message


async def test_previous_response_not_found(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    first = await oai.responses.create(model=MODEL, input="uno")
    chained = await oai.responses.create(model=MODEL, input="due", previous_response_id=first.id)
    assert chained.output_text == "Echo: due"
    fake_openai.forget(first.id)
    with pytest.raises(openai.BadRequestError) as err:
        await oai.responses.create(model=MODEL, input="tre", previous_response_id=first.id)
    assert err.value.code == "previous_response_not_found"
    assert err.value.param == "previous_response_id"
    assert err.value.message.endswith(f"Previous response with id '{first.id}' not found.")
    fake_openai.forget_all()
    with pytest.raises(openai.BadRequestError):
        await oai.responses.create(model=MODEL, input="x", previous_response_id=chained.id)
    unstored = await oai.responses.create(model=MODEL, input="y", store=False)
    with pytest.raises(openai.BadRequestError):
        await oai.responses.create(model=MODEL, input="z", previous_response_id=unstored.id)
    assert fake_openai.http_statuses == [200, 200, 400, 400, 200, 400]


async def test_deleted_response_cannot_be_chained(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    first = await oai.responses.create(model=MODEL, input="uno")
    assert (await oai.responses.retrieve(first.id)).id == first.id
    await oai.responses.delete(first.id)
    assert fake_openai.deleted_responses == [first.id]
    with pytest.raises(openai.BadRequestError):
        await oai.responses.create(model=MODEL, input="due", previous_response_id=first.id)


async def test_scripted_429_is_a_rate_limit_error_with_retry_after(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    fake_openai.script.extend(
        [
            Fail(429, code="rate_limit_exceeded", message="Rate limit reached", retry_after=2),
            Fail(429, code="insufficient_quota", message="You exceeded your current quota"),
            Fail(500),
        ]
    )
    with pytest.raises(openai.RateLimitError) as err:
        await oai.responses.create(model=MODEL, input="a")
    assert err.value.status_code == 429 and err.value.code == "rate_limit_exceeded"
    assert err.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.RateLimitError) as quota:
        await oai.responses.create(model=MODEL, input="b")
    assert quota.value.code == "insufficient_quota" and "retry-after" not in quota.value.response.headers
    with pytest.raises(openai.InternalServerError):
        await oai.responses.create(model=MODEL, input="c")
    resp = await oai.responses.create(model=MODEL, input="d")
    assert resp.output_text == "Echo: d"


async def test_missing_model_and_bad_api_key(
    fake_openai: FakeOpenAI, oai: AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{fake_openai.base_url}/responses", json={"input": "x"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "model"
    fake_openai.expected_api_key = "sk-other"
    with pytest.raises(openai.AuthenticationError) as err:
        await oai.responses.create(model=MODEL, input="x")
    assert err.value.code == "invalid_api_key"
    assert err.value.message.endswith("Incorrect API key provided")


async def test_hang_makes_the_client_time_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.script.append(Hang(30))
    started = time.monotonic()
    async with AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0, timeout=0.2) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.responses.create(model=MODEL, input="x")
        assert (await client.responses.create(model=MODEL, input="y")).output_text == "Echo: y"
    assert time.monotonic() - started < 10  # far from the 30 s hang (generous: tests run in parallel)


async def test_empty_incomplete_and_refusal_steps(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    fake_openai.script.extend(
        [EmptyReply(), Incomplete("max_output_tokens", "mezza frase"), Refusal("No."), Reply("ok", ())]
    )
    empty = await oai.responses.create(model=MODEL, input="a")
    assert empty.status == "completed" and empty.output_text == "" and empty.output == []
    partial = await oai.responses.create(model=MODEL, input="b")
    assert partial.status == "incomplete" and partial.output_text == "mezza frase"
    assert partial.incomplete_details is not None and partial.incomplete_details.reason == "max_output_tokens"
    refusal = await oai.responses.create(model=MODEL, input="c")
    assert refusal.output_text == ""
    first = refusal.output[0]
    assert first.type == "message" and first.content[0].type == "refusal"
    assert (await oai.responses.create(model=MODEL, input="d")).output_text == "ok"


async def test_annotations_reach_the_sdk(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    citation = {"type": "file_citation", "file_id": "file-abc", "filename": "menu.pdf", "index": 3}
    fake_openai.script.append(Reply("Sì.", [citation]))
    resp = await oai.responses.create(model=MODEL, input="menu?")
    item = resp.output[0]
    assert item.type == "message"
    part = item.content[0]
    assert part.type == "output_text" and part.annotations[0].type == "file_citation"


async def test_responder_decides_per_request_under_concurrency(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    async def responder(body: dict[str, Any]) -> Step | None:
        text = str(body["input"])
        if text == "default":
            return None
        return Reply(f"for {text}")

    fake_openai.responder = responder
    fake_openai.latency = (0.01, 0.05)
    inputs = [f"c{i}" for i in range(8)]
    results = await asyncio.gather(*(oai.responses.create(model=MODEL, input=t) for t in inputs))
    assert [r.output_text for r in results] == [f"for {t}" for t in inputs]
    assert fake_openai.max_concurrent_seen > 1
    fake_openai.responder = lambda body: None
    assert (await oai.responses.create(model=MODEL, input="default")).output_text == "Echo: default"


async def test_fail_rate_injects_429_and_500(fake_openai: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    fake_openai.fail_rate = 0.5
    statuses = []
    for _ in range(30):
        async with http.post(f"{fake_openai.base_url}/responses", json={"model": MODEL, "input": "x"}) as r:
            statuses.append(r.status)
            if r.status != 200:
                assert (await r.json())["error"]["code"] in ("rate_limit_exceeded", "server_error")
    assert set(statuses) == {200, 429, 500}
    assert fake_openai.http_statuses == statuses


async def test_wait_for_requests_sees_requests_in_flight(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    fake_openai.latency = 0.2
    task = asyncio.create_task(oai.responses.create(model=MODEL, input="lento"))
    bodies = await fake_openai.wait_for_requests(1, timeout=1)
    assert bodies[0]["input"] == "lento" and not task.done()
    assert (await task).output_text == "Echo: lento"
    with pytest.raises(TimeoutError):
        await fake_openai.wait_for_requests(2, timeout=0.05)


async def test_all_traffic_text_covers_url_headers_and_body(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    await oai.responses.create(model=MODEL, input="nessun numero", metadata={"k": "v"})
    traffic = fake_openai.all_traffic_text()
    assert PHONE not in traffic
    assert f"POST {fake_openai.base_url}/responses" in traffic and "nessun numero" in traffic
    await oai.responses.create(model=MODEL, input="x", extra_headers={"X-Leak": PHONE})
    assert PHONE in fake_openai.all_traffic_text()


# -- FakeOpenAI: files, vector stores, audio, models ------------------------------------------------------------
async def test_files_and_vector_stores(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    first = await oai.files.create(file=("faq.txt", b"orari: 9-18", "text/plain"), purpose="assistants")
    assert first.id.startswith("file-") and first.bytes == 11 and first.filename == "faq.txt"
    assert fake_openai.files[first.id].content == b"orari: 9-18"
    store = await oai.vector_stores.create(name="kb", file_ids=[first.id])
    assert store.id.startswith("vs_") and store.name == "kb"
    assert store.file_counts.in_progress == 1

    second = await oai.files.create(file=("menu.pdf", b"%PDF-1.4 fake", "application/pdf"), purpose="assistants")
    attached = await oai.vector_stores.files.create_and_poll(file_id=second.id, vector_store_id=store.id)
    assert attached.status == "completed" and attached.last_error is None
    assert attached.vector_store_id == store.id
    refreshed = await oai.vector_stores.retrieve(store.id)
    assert refreshed.file_counts.completed == 2 and refreshed.status == "completed"

    fake_openai.vector_file_fail = True
    third = await oai.files.create(file=("bad.pdf", b"garbage", "application/pdf"), purpose="assistants")
    failed = await oai.vector_stores.files.create_and_poll(file_id=third.id, vector_store_id=store.id)
    assert failed.status == "failed"
    assert failed.last_error is not None and failed.last_error.code == "invalid_file"

    assert (await oai.vector_stores.delete(store.id)).deleted
    assert (await oai.files.delete(first.id)).deleted
    assert fake_openai.deleted_vector_stores == [store.id] and fake_openai.deleted_files == [first.id]
    assert store.id not in fake_openai.vector_stores and first.id not in fake_openai.files
    with pytest.raises(openai.NotFoundError):
        await oai.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        await oai.files.delete(first.id)


async def test_transcription(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    audio = b"OggS\x00\x02fake opus \r\n\xff\x00 bytes"
    result = await oai.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("voice.ogg", audio, "audio/ogg")
    )
    assert result.text == "trascrizione di prova"
    (call,) = fake_openai.transcriptions
    assert call.model == "gpt-4o-mini-transcribe" and call.content == audio and call.filename == "voice.ogg"
    fake_openai.transcript = "altro"
    text = await oai.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("v.ogg", audio, "audio/ogg"), response_format="text"
    )
    assert str(text).strip() == "altro"


async def test_models_retrieve(fake_openai: FakeOpenAI, oai: AsyncOpenAI) -> None:
    model = await oai.models.retrieve("gpt-4.1-mini")
    assert model.id == "gpt-4.1-mini" and model.object == "model"
    fake_openai.known_models = {"gpt-4.1-mini"}
    with pytest.raises(openai.NotFoundError) as err:
        await oai.models.retrieve("gpt-nope")
    assert err.value.code == "model_not_found"


# -- FakeGraph --------------------------------------------------------------------------------------------------
async def test_graph_text_send_and_response_shape(fake_graph: FakeGraph, http: aiohttp.ClientSession) -> None:
    request = load_sample_json("send_text_request")
    async with http.post(f"{fake_graph.base_url}/100000000000001/messages", json=request, headers=bearer()) as r:
        assert r.status == 200
        answer = await r.json()
    expected = load_sample_json("send_text_response")
    expected["messages"][0]["id"] = "wamid.FAKE_OUT_1"
    assert answer == expected
    assert fake_graph.sent == [{**request, "phone_number_id": "100000000000001", "wamid": "wamid.FAKE_OUT_1"}]
    assert fake_graph.texts() == ["Certo! La borsa rossa e' disponibile."]
    assert fake_graph.texts_to(PHONE) == fake_graph.texts() and fake_graph.texts_to("39333") == []


async def test_graph_read_mark_reaction_and_bsuid_send(fake_graph: FakeGraph, http: aiohttp.ClientSession) -> None:
    url = f"{fake_graph.base_url}/100000000000001/messages"
    async with http.post(url, json=load_sample_json("mark_read_typing_request"), headers=bearer()) as r:
        assert await r.json() == load_sample_json("mark_read_response")
    async with http.post(url, json=load_sample_json("send_reaction_request"), headers=bearer()) as r:
        assert r.status == 200
    bsuid_send = {
        "messaging_product": "whatsapp",
        "recipient": "IT.1000000000000000003",
        "type": "text",
        "text": {"body": "ciao"},
    }
    async with http.post(url, json=bsuid_send, headers=bearer()) as r:
        answer = await r.json()
    assert answer["contacts"] == [{"input": "IT.1000000000000000003", "user_id": "IT.1000000000000000003"}]
    assert fake_graph.read_marks[0]["message_id"] == "wamid.TEST_IN_TEXT_0001"
    assert fake_graph.reactions() == [{"message_id": "wamid.TEST_IN_TEXT_0001", "emoji": "👍"}]
    assert fake_graph.texts_to("IT.1000000000000000003") == ["ciao"]
    assert [m["type"] for m in await fake_graph.wait_for_sent(2)] == ["reaction", "text"]
    assert [a["outcome"] for a in fake_graph.attempts] == ["read", "sent", "sent"]


async def test_graph_error_injection(fake_graph: FakeGraph, http: aiohttp.ClientSession) -> None:
    fake_graph.errors.append(GraphFailure.re_engagement())
    url = f"{fake_graph.base_url}/100000000000001/messages"
    send = load_sample_json("send_text_request")
    async with http.post(url, json=send, headers=bearer()) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    sample = load_sample_json("graph_error_131047")["error"]
    assert error.keys() == sample.keys()
    assert {k: v for k, v in error.items() if k != "fbtrace_id"} == {
        k: v for k, v in sample.items() if k != "fbtrace_id"
    }
    fake_graph.errors.append(GraphFailure.rate_limited())
    async with http.post(url, json=send, headers=bearer()) as r:
        assert r.status == 429 and (await r.json())["error"]["code"] == 130429
    async with http.post(url, json=send, headers=bearer()) as r:
        assert r.status == 200
    assert len(fake_graph.attempts) == 3 and len(fake_graph.sent) == 1
    too_long = {**send, "text": {"body": "x" * 4097}}
    async with http.post(url, json=too_long, headers=bearer()) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == 100
    assert len(fake_graph.sent) == 1


async def test_graph_hang_next(fake_graph: FakeGraph, http: aiohttp.ClientSession) -> None:
    fake_graph.hang_next = 1
    url = f"{fake_graph.base_url}/100000000000001/messages"
    send = load_sample_json("send_text_request")
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(url, json=send, headers=bearer(), timeout=aiohttp.ClientTimeout(total=0.2)):
            pass
    async with http.post(url, json=send, headers=bearer()) as r:
        assert r.status == 200
    assert [a["outcome"] for a in fake_graph.attempts] == ["hang", "sent"] and len(fake_graph.sent) == 1


async def test_graph_bearer_is_checked(fake_graph: FakeGraph, http: aiohttp.ClientSession) -> None:
    url = f"{fake_graph.base_url}/100000000000001/messages"
    send = load_sample_json("send_text_request")
    for headers in ({}, bearer("wrong")):
        async with http.post(url, json=send, headers=headers) as r:
            assert r.status == 401
            body = await r.json()
            assert body["error"]["code"] == 190 and body["error"]["type"] == "OAuthException"
    assert fake_graph.sent == [] and len(fake_graph.requests) == 2


async def test_graph_media_url_and_download(fake_graph: FakeGraph, http: aiohttp.ClientSession) -> None:
    data = b"\xff\xd8\xff\xe0 fake jpeg"
    fake_graph.media["1000000000000101"] = (data, "image/jpeg")
    async with http.get(f"{fake_graph.base_url}/1000000000000101", headers=bearer()) as r:
        meta = await r.json()
    assert meta.keys() == load_sample_json("media_url_response").keys()
    assert meta["url"] == f"{fake_graph.origin}/download/1000000000000101"
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert (meta["file_size"], meta["mime_type"], meta["id"]) == (len(data), "image/jpeg", "1000000000000101")
    async with http.get(meta["url"], headers=bearer()) as r:
        assert r.status == 200 and await r.read() == data and r.content_type == "image/jpeg"
    async with http.get(meta["url"]) as r:
        assert r.status == 401
    async with http.get(f"{fake_graph.base_url}/999", headers=bearer()) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == 100
    assert fake_graph.media_downloads == ["1000000000000101"]


async def test_graph_media_upload(fake_graph: FakeGraph, http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", "application/pdf")
    form.add_field("file", b"%PDF-1.4 conferma", filename="ordine.pdf", content_type="application/pdf")
    async with http.post(f"{fake_graph.base_url}/100000000000001/media", data=form, headers=bearer()) as r:
        media_id = (await r.json())["id"]
    assert fake_graph.media[media_id] == (b"%PDF-1.4 conferma", "application/pdf")
    assert fake_graph.uploaded_media == [media_id]


async def test_graph_wait_for_sent(fake_graph: FakeGraph, http: aiohttp.ClientSession) -> None:
    url = f"{fake_graph.base_url}/100000000000001/messages"

    async def send_later() -> None:
        for body in ("uno", "due"):
            await asyncio.sleep(0.02)
            msg = {"messaging_product": "whatsapp", "to": PHONE, "type": "text", "text": {"body": body}}
            async with http.post(url, json=msg, headers=bearer()) as r:
                assert r.status == 200

    task = asyncio.create_task(send_later())
    sent = await fake_graph.wait_for_sent(2, timeout=2)
    await task
    assert [m["text"]["body"] for m in sent] == ["uno", "due"]
    with pytest.raises(TimeoutError):
        await fake_graph.wait_for_sent(3, timeout=0.05)


# -- meta helpers -----------------------------------------------------------------------------------------------
def test_sign_is_hmac_sha256_of_the_exact_bytes() -> None:
    body = load_sample("text")
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={expected}"
    payload_bytes, headers = signed({"a": "è"}, "s3cret", escape_unicode=True)
    assert payload_bytes == b'{"a":"\\u00e8"}'
    assert headers["X-Hub-Signature-256"] == sign(payload_bytes, "s3cret")
    assert dumps({"a": "è"}) == '{"a":"è"}'.encode()


def test_builders_match_the_samples() -> None:
    built = text_message(
        "wamid.TEST_IN_TEXT_0001",
        PHONE,
        "Ciao, avete ancora la borsa rossa?",
        user_id="IT.1000000000000000001",
        timestamp="1767225601",
    )
    assert built == load_sample_json("text")
    assert orjson.dumps(built) == orjson.dumps(load_sample_json("text"))  # same key order too
    read = status_update("wamid.TEST_OUT_0001", "read", PHONE, timestamp="1767225702")
    assert read == load_sample_json("status_read")
    failed = status_update(
        "wamid.TEST_OUT_0004", "failed", PHONE, errors=[re_engagement_error()], timestamp="1767225703"
    )
    assert failed == load_sample_json("status_failed_131047")
    bsuid = text_message("wamid.X", None, "hi", user_id="IT.1", name="U")
    message = bsuid["entry"][0]["changes"][0]["value"]["messages"][0]
    assert "from" not in message and message["from_user_id"] == "IT.1"


def test_load_sample_honours_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "custom.json").write_bytes(b'{"x":1}')
    monkeypatch.setenv("BOT_SAMPLES_DIR", str(tmp_path))
    assert load_sample("custom") == b'{"x":1}' and load_sample("custom.json") == b'{"x":1}'
