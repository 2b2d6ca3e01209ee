"""The PDF knowledge base: upload, checks, OpenAI indexing (and its failure), replacement, local mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient

from bot.ai.knowledge import KnowledgeDoc, fts_query, read_pdf
from bot.configuration.config import Config
from bot.web.keys import KNOWLEDGE, REPOS
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.meta import text_message
from tests.fakes.openai_server import CallTools, FakeOpenAI, function_call_outputs
from tests.helpers import repos_of, wait_handled
from tests.web.helpers import CATALOGUE, admin, encrypted, flate_bomb, indexed, make_pdf, post_form, upload_pdf

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


async def _configure(client: TestClient, *, enabled: bool = True, mode: str = "openai") -> None:
    resp = await client.put("/api/settings", data=orjson.dumps({"knowledge_base": {"enabled": enabled, "mode": mode}}),
                            headers=BEARER)
    assert resp.status == 200, await resp.text()


async def _doc(client: TestClient) -> KnowledgeDoc:
    doc = await repos_of(client).knowledge.get()
    assert doc is not None
    return doc


async def test_openai_mode_indexes_and_every_model_call_carries_file_search(
    client: TestClient, fake_openai: FakeOpenAI, config: Config
) -> None:
    await _configure(client)
    csrf = await admin(client)
    resp = await upload_pdf(client, csrf, make_pdf(CATALOGUE), filename="Condizioni di vendita.pdf")
    assert resp.status == 303, await resp.text()
    page = await (await client.get("/settings")).text()
    assert "Processing" in page or "Ready" in page
    await indexed(client)

    doc = await _doc(client)
    assert doc.status == "ready", doc.error
    assert doc.pages == 2 and doc.filename == "Condizioni di vendita.pdf" and doc.mode == "openai"
    assert list(fake_openai.files) == [doc.openai_file_id]
    uploaded = fake_openai.files[doc.openai_file_id or ""]
    assert uploaded.purpose == "assistants" and uploaded.content == make_pdf(CATALOGUE)
    store = fake_openai.vector_stores[doc.vector_store_id or ""]
    assert store.files[uploaded.id].status == "completed"
    page = await (await client.get("/settings")).text()
    assert "Ready: “Condizioni di vendita.pdf” (2 pages" in page

    # Stored in the data dir, privately, and served by no route.
    stored = config.data_dir / "kb" / doc.stored_name
    assert stored.read_bytes() == make_pdf(CATALOGUE)
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(stored.parent).st_mode) == 0o700
    assert (await client.get(f"/static/../kb/{doc.stored_name}")).status == 404

    await post_webhook(client, text_message("wamid.K1", "393331112222", "Spedite all'estero?"))
    await wait_handled(client, 1)
    tools = fake_openai.responses_requests()[-1]["tools"]
    assert {"type": "file_search", "vector_store_ids": [doc.vector_store_id], "max_num_results": 5} in tools

    # Switched off: the next call has no file_search.
    await _configure(client, enabled=False)
    await post_webhook(client, text_message("wamid.K2", "393331112222", "E i resi?"))
    await wait_handled(client, 2)
    assert all(t["type"] != "file_search" for t in fake_openai.responses_requests()[-1].get("tools", []))


async def test_failed_indexing_is_reported_and_cleaned_up(client: TestClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.vector_file_fail = True
    await _configure(client)
    csrf = await admin(client)
    resp = await upload_pdf(client, csrf, make_pdf(CATALOGUE))
    assert resp.status == 303
    await indexed(client)
    doc = await _doc(client)
    assert doc.status == "failed"
    assert doc.error is not None and "could not be parsed" in doc.error and "invalid_file" in doc.error
    assert doc.vector_store_id is None and doc.openai_file_id is None
    # Nothing is left behind at OpenAI.
    assert fake_openai.vector_stores == {} and fake_openai.files == {}
    assert len(fake_openai.deleted_vector_stores) == 1 and len(fake_openai.deleted_files) == 1
    # The failure is also among the recent errors of /ai-diagnostics.
    recorded = await client.app[REPOS].db.fetchrow("SELECT type, message FROM errors")  # type: ignore[index]
    assert recorded is not None and recorded["type"] == "kb_failed" and "invalid_file" in recorded["message"]
    page = await (await client.get("/settings")).text()
    assert "Failed: OpenAI could not index the PDF" in page
    data = await (await client.get("/api/settings")).json()
    assert data["knowledge_base"]["status"] == "failed"
    await post_webhook(client, text_message("wamid.K3", "393331112222", "Ciao"))
    await wait_handled(client, 1)
    assert all(t["type"] != "file_search" for t in fake_openai.responses_requests()[-1].get("tools", []))

    # Uploading again once OpenAI is happy fixes it.
    fake_openai.vector_file_fail = False
    await upload_pdf(client, csrf, make_pdf(CATALOGUE))
    await indexed(client)
    assert (await _doc(client)).status == "ready"


async def test_indexing_without_a_key_fails_with_a_reason(make_client: ClientFactory, fake_openai: FakeOpenAI) -> None:
    client = await make_client(openai_api_key="")
    await _configure(client)
    csrf = await admin(client)
    await upload_pdf(client, csrf, make_pdf(CATALOGUE))
    await indexed(client)
    doc = await _doc(client)
    assert doc.status == "failed" and doc.error and "No OpenAI API key" in doc.error
    assert fake_openai.files == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is a text file, not a PDF at all", "not a readable PDF"),
        (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", "not a readable PDF"),
        (encrypted(make_pdf(CATALOGUE)), "password-protected"),
        (make_pdf(["", ""]), "no text the assistant can read"),
        (flate_bomb(), "more than the server will unpack"),
        (make_pdf(CATALOGUE)[:-200], "not a readable PDF"),
    ],
    ids=["not-a-pdf", "truncated", "encrypted", "no-text", "flate-bomb", "cut-short"],
)
async def test_bad_pdfs_get_a_clear_error(client: TestClient, fake_openai: FakeOpenAI, config: Config,
                                          data: bytes, message: str) -> None:
    await _configure(client)
    csrf = await admin(client)
    resp = await upload_pdf(client, csrf, data)
    assert resp.status == 400
    assert message in await resp.text()
    assert await repos_of(client).knowledge.get() is None
    assert fake_openai.files == {}
    assert list((config.data_dir / "kb").iterdir()) == []  # the refused upload is not kept


async def test_upload_size_limit_and_csrf(client: TestClient, monkeypatch: pytest.MonkeyPatch, config: Config) -> None:
    monkeypatch.setattr("bot.web.settings_page.MAX_PDF_BYTES", 1000)
    csrf = await admin(client)
    resp = await upload_pdf(client, csrf, make_pdf(CATALOGUE) + b" " * 2000)
    assert resp.status == 413
    assert "larger than" in await resp.text()
    resp = await upload_pdf(client, "forged", make_pdf(CATALOGUE))
    assert resp.status == 403
    assert list((config.data_dir / "kb").iterdir()) == []
    assert await repos_of(client).knowledge.get() is None


async def test_replacing_the_pdf_deletes_the_old_store_and_file(
    client: TestClient, fake_openai: FakeOpenAI, config: Config
) -> None:
    await _configure(client)
    csrf = await admin(client)
    await upload_pdf(client, csrf, make_pdf(CATALOGUE), filename="old.pdf")
    await indexed(client)
    old = await _doc(client)
    assert old.status == "ready"
    await upload_pdf(client, csrf, make_pdf(["Nuovo listino prezzi 2027", "Spedizione sempre gratuita"]),
                     filename="new.pdf")
    await indexed(client)
    new = await _doc(client)
    assert new.status == "ready" and new.filename == "new.pdf"
    assert new.vector_store_id != old.vector_store_id and new.openai_file_id != old.openai_file_id
    assert fake_openai.deleted_vector_stores == [old.vector_store_id]
    assert fake_openai.deleted_files == [old.openai_file_id]
    assert set(fake_openai.vector_stores) == {new.vector_store_id}
    assert [p.name for p in (config.data_dir / "kb").iterdir()] == [new.stored_name]


async def test_local_mode_searches_pages_with_a_tool(client: TestClient, fake_openai: FakeOpenAI) -> None:
    await _configure(client, mode="local")
    csrf = await admin(client)
    await upload_pdf(client, csrf, make_pdf(CATALOGUE))
    await indexed(client)
    doc = await _doc(client)
    assert doc.status == "ready" and doc.mode == "local"
    assert fake_openai.files == {} and fake_openai.vector_stores == {}  # nothing leaves the server
    assert await repos_of(client).knowledge.page_count() == 2

    kb = client.app[KNOWLEDGE]  # type: ignore[index]
    hits = await kb.search("perche")  # no accent typed: remove_diacritics finds "perché"
    assert [h.page for h in hits] == [2]
    assert await kb.search("spedizione estero")
    assert await kb.search('"; DROP TABLE kb_pages; --') == []

    fake_openai.script.append(CallTools([("search_knowledge_base", {"query": "spedizione estero"})]))
    await post_webhook(client, text_message("wamid.L1", "393331112222", "Quanto costa spedire all'estero?"))
    await wait_handled(client, 1)
    first, second = fake_openai.responses_requests()[-2:]
    assert all(t["type"] != "file_search" for t in first["tools"])
    assert any(t.get("name") == "search_knowledge_base" for t in first["tools"])
    output = orjson.loads(next(iter(function_call_outputs(second).values())))
    assert output["results"] and output["results"][0]["page"] == 1
    assert "15 euro" in output["results"][0]["text"]

    # Switched off, the tool answers with nothing to use.
    await _configure(client, enabled=False, mode="local")
    fake_openai.script.append(CallTools([("search_knowledge_base", {"query": "resi"})]))
    await post_webhook(client, text_message("wamid.L2", "393331112222", "E i resi?"))
    await wait_handled(client, 2)
    output = orjson.loads(next(iter(function_call_outputs(fake_openai.responses_requests()[-1]).values())))
    assert output["results"] == [] and "no searchable document" in output["note"]


async def test_switching_mode_reindexes_and_cleans_up_openai(client: TestClient, fake_openai: FakeOpenAI) -> None:
    await _configure(client)
    csrf = await admin(client)
    await upload_pdf(client, csrf, make_pdf(CATALOGUE))
    await indexed(client)
    openai_doc = await _doc(client)
    await _configure(client, mode="local")
    await indexed(client)
    local_doc = await _doc(client)
    assert local_doc.mode == "local" and local_doc.status == "ready"
    assert fake_openai.deleted_vector_stores == [openai_doc.vector_store_id]
    assert fake_openai.deleted_files == [openai_doc.openai_file_id]
    assert local_doc.vector_store_id is None
    await _configure(client, mode="openai")
    await indexed(client)
    back = await _doc(client)
    assert back.status == "ready" and back.vector_store_id in fake_openai.vector_stores
    assert await repos_of(client).knowledge.page_count() == 0


async def test_interrupted_indexing_resumes(client: TestClient, fake_openai: FakeOpenAI) -> None:
    await _configure(client)
    csrf = await admin(client)
    await upload_pdf(client, csrf, make_pdf(CATALOGUE))
    await indexed(client)
    half_done = await _doc(client)
    # As if the server had stopped mid-run: the row says processing and holds the half-made ids.
    await repos_of(client).db.execute("UPDATE knowledge_base SET status = 'processing'")
    kb = client.app[KNOWLEDGE]  # type: ignore[index]
    await kb.resume()
    assert kb.busy
    await indexed(client)
    doc = await _doc(client)
    assert doc.status == "ready" and doc.vector_store_id != half_done.vector_store_id
    assert fake_openai.deleted_vector_stores == [half_done.vector_store_id]


async def test_shutdown_cancels_indexing_and_leaves_no_task(client: TestClient) -> None:
    await _configure(client, mode="local")
    csrf = await admin(client)
    kb = client.app[KNOWLEDGE]  # type: ignore[index]
    await upload_pdf(client, csrf, make_pdf(CATALOGUE))
    await kb.close()
    assert not kb.busy


def test_read_pdf_and_query_helpers(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(make_pdf(CATALOGUE))
    text = read_pdf(path)
    assert len(text.pages) == 2 and "perché" in text.pages[1]
    assert fts_query('spedizione "estero" OR NOT') == '"spedizione" OR "estero" OR "OR" OR "NOT"'
    assert fts_query("  ;;  ") == ""


async def test_counts_are_written_in_the_singular_for_one(client: TestClient) -> None:
    await _configure(client, mode="local")
    csrf = await admin(client)
    await upload_pdf(client, csrf, make_pdf(CATALOGUE[:1]), filename="listino.pdf")
    await indexed(client)
    page = await (await client.get("/settings")).text()
    assert "“listino.pdf” (1 page, local search)" in page and "1 pages" not in page
    activity = await repos_of(client).audit.recent(5)
    assert any(a["detail"] == "listino.pdf (1 page)" for a in activity)
    resp = await post_form(client, "/ai-diagnostics/reset-sessions", csrf, confirm="yes")
    page = await (await client.get(resp.headers["Location"])).text()
    assert "Sessions reset: 0 conversations start afresh." in page
