"""run.py copy-sqlite-to-postgres: an installation used on SQLite, copied, then served from PostgreSQL.

Needs a PostgreSQL server (the PostgreSQL half of the suite); skipped in the SQLite half.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from bot.commands import copy_sqlite_to_postgres
from bot.configuration.config import Config
from bot.persistence.migrations import load_migrations
from tests.backend import config_for, fresh_database_url
from tests.conftest import API_TOKEN, ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import text_message
from tests.helpers import repos_of, wait_conversation, wait_handled, wait_sent
from tests.tools.conftest import load_sample_catalogue
from tests.web.helpers import OPENAI_KEY

pytestmark = pytest.mark.postgres_only
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
PHONE = "393335557777"
ROOT = Path(__file__).resolve().parents[1]
ROWS = "SELECT id, wamid, text, status FROM inbox ORDER BY id"


async def test_an_installation_moves_from_sqlite_to_postgres_and_carries_on(
    make_client: ClientFactory, fake_graph: FakeGraph, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    # 1. The installation on SQLite, used the ordinary way.
    old = await make_client(database="")
    assert (await post_webhook(old, text_message("wamid.M1", PHONE, "Avete il caffè?", name="Giulia"))).status == 200
    await wait_handled(old, 1)
    resp = await old.post(f"/api/conversations/{PHONE}/messages", headers=BEARER,
                          data=orjson.dumps({"text": "Sì, arriva domani. Marco"}))
    assert resp.status == 202
    await wait_sent(old, 2)
    await wait_conversation(old, lambda c: c.paused, "the operator's pause")
    resp = await old.put("/api/settings", headers=BEARER, data=orjson.dumps({"use_stored_settings": True,
                                                                                 "openai_api_key": OPENAI_KEY}))
    assert resp.status == 200
    repos = repos_of(old)
    await load_sample_catalogue(repos)
    conversation = await repos.conversations.find(PHONE)
    assert conversation is not None
    contact = await repos.contacts.for_conversation(conversation.phone_number_id, conversation.customer_id)
    assert contact is not None
    order = await repos.orders.create_draft(contact.id, [("CAF-ESP-250", 2)], notes="al banco")
    await repos.knowledge.set_pages(["Orari: dal lunedì al sabato.", "Perché spediamo in 48 ore: corriere espresso."])
    inbox_before = [dict(r) for r in await repos.db.fetch(ROWS)]
    outbox_before = [dict(r) for r in await repos.db.fetch("SELECT id, author, text, status FROM outbox ORDER BY id")]
    await old.close()

    # 2. The copy, into an empty PostgreSQL schema.
    url = fresh_database_url(tmp_path)
    assert await copy_sqlite_to_postgres.run(config_for(data), [str(data / "bot.db"), url]) == 0
    out = capsys.readouterr().out
    assert "every count matches the SQLite file" in out and "BOT_SECRET_KEY" in out
    assert "  inbox                          1" in out and "  products                      15" in out
    assert out.index("contacts") < out.index("orders") < out.index("order_lines")  # parents first

    # 3. The same data directory (its secret.key) served from PostgreSQL: everything is there.
    new = await make_client(database=url)
    new_repos = repos_of(new)
    assert new_repos.db.dialect == "postgres"
    listed = (await (await new.get("/api/conversations", headers=BEARER)).json())["conversations"]
    assert [(c["wa_id"], c["name"]) for c in listed] == [(PHONE, "Giulia")]
    assert [dict(r) for r in await new_repos.db.fetch(ROWS)] == inbox_before  # ids kept
    assert [dict(r) for r in await new_repos.db.fetch(
        "SELECT id, author, text, status FROM outbox ORDER BY id")] == outbox_before
    thread = (await (await new.get(f"/api/conversations/{PHONE}/messages", headers=BEARER)).json())["messages"]
    assert [m["text"] for m in thread] == ["Avete il caffè?", "Echo: Avete il caffè?", "Sì, arriva domani. Marco"]
    settings = await (await new.get("/api/settings", headers=BEARER)).json()
    assert settings["openai_api_key_source"] == "stored" and settings["openai_api_key_masked"] == "sk-…XYZ9"
    assert (await new_repos.conversations.find(PHONE)).paused  # type: ignore[union-attr]
    copied_order = await new_repos.orders.get(order.id)
    assert copied_order is not None and copied_order.total_cents == order.total_cents == 1380
    assert copied_order.lines[0].quantity == 2
    assert "Caffè Espresso 250g" in [p.name for p in await new_repos.products.search("caffe")]  # index rebuilt
    assert [h.page for h in await new_repos.knowledge.search('"perche"', 3)] == [2]
    # New rows get new ids: the sequences were moved past the copied ones.
    await new.post(f"/api/conversations/{PHONE}/resume", headers=BEARER)
    await wait_conversation(new, lambda c: not c.paused, "the hand-back")
    assert (await post_webhook(new, text_message("wamid.M2", PHONE, "E il pane?"))).status == 200
    await wait_handled(new, 2)
    rows = [dict(r) for r in await new_repos.db.fetch(ROWS)]
    assert rows[-1]["wamid"] == "wamid.M2" and rows[-1]["id"] == inbox_before[-1]["id"] + 1
    await fake_graph.wait_for_sent(3)
    await new.close()

    # 4. A target with rows is refused, unless --force replaces them (with the SQLite file's as they were).
    assert await copy_sqlite_to_postgres.run(config_for(data), [str(data / "bot.db"), url]) == 1
    assert "already holds rows" in capsys.readouterr().err
    assert await copy_sqlite_to_postgres.run(config_for(data), [str(data / "bot.db"), url, "--force"]) == 0
    check = await make_client(database=url)
    assert [dict(r) for r in await repos_of(check).db.fetch(ROWS)] == inbox_before


async def test_clear_errors_and_nothing_copied(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               unused_tcp_port: int) -> None:
    config = config_for(tmp_path / "data")
    url = fresh_database_url(tmp_path)
    assert await copy_sqlite_to_postgres.run(config, [str(tmp_path / "missing.db"), url]) == 1
    assert "there is no SQLite database at" in capsys.readouterr().err
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    assert await copy_sqlite_to_postgres.run(config, [str(tmp_path / "junk.db"), url]) == 1
    assert "is not a database of this server" in capsys.readouterr().err
    # A real SQLite database, made by `run.py migrate`, for the unreachable server below.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "migrate", "--data-dir", str(tmp_path / "src"), cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "BOT_DATABASE_URL"},  # SQLite in --data-dir
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    applied = f"applied {len(load_migrations('sqlite'))} migration(s) to sqlite:"
    assert applied in stdout.decode() and "0005_templates" in stdout.decode()
    down = f"postgresql://postgres:hunter22@127.0.0.1:{unused_tcp_port}/bot"
    assert await copy_sqlite_to_postgres.run(config, [str(tmp_path / "src" / "bot.db"), down]) == 1
    err = capsys.readouterr().err
    assert "nothing was copied" in err and f"127.0.0.1:{unused_tcp_port}" in err and "hunter22" not in err
    no_url = Config(data_dir=tmp_path / "src")  # and no BOT_DATABASE_URL either
    assert await copy_sqlite_to_postgres.run(no_url, [str(tmp_path / "src" / "bot.db")]) == 2
