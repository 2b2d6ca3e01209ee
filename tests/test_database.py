"""The Database interface on a real backend (SQLite here, PostgreSQL in the PostgreSQL half of the suite).

Group commit, units that fail alone, compare-and-set, urgent units first, exclusive transactions,
and the full-text search that ignores accents: the same promises, whichever backend keeps them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.commands import migrate
from bot.configuration.config import Config
from bot.persistence import Repositories
from bot.persistence.crm import ProductInput
from bot.persistence.database import Conflict, Database, IntegrityError, Stmt, row_to
from bot.persistence.inbox import InboxRow
from bot.persistence.migrations import load_migrations
from bot.persistence.writer import MAX_UNITS_PER_GROUP
from tests.backend import fresh_database_url

ERROR = "INSERT INTO errors (type, message, created_at) VALUES ($1, $2, $3)"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database of the backend under test, nobody else's."""
    database = Database.create(fresh_database_url(tmp_path))
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def count(db: Database, table: str = "errors") -> int:
    """Rows in a table."""
    return int(await db.fetchval(f"SELECT COUNT(*) FROM {table}"))


async def test_concurrent_writes_share_a_few_group_commits(db: Database) -> None:
    before = db.groups  # type: ignore[attr-defined]
    results = await asyncio.gather(*(db.write([Stmt(ERROR, ("bulk", f"m{i}", 1.0))]) for i in range(200)))
    assert results == [[1]] * 200  # one row changed by each unit
    assert await count(db) == 200
    groups = db.groups - before  # type: ignore[attr-defined]
    # 200 units waiting together: every group holds up to MAX_UNITS_PER_GROUP of them.
    assert 1 <= groups <= -(-200 // MAX_UNITS_PER_GROUP) + 1, groups


async def test_a_unit_that_breaks_a_constraint_fails_alone_in_its_group(db: Database) -> None:
    await db.execute("INSERT INTO orphan_statuses (wamid, status, received_at) VALUES ('taken', 'sent', 0)")
    before = db.groups  # type: ignore[attr-defined]

    def unit(i: int) -> list[Stmt]:
        wamid = "taken" if i == 15 else f"w{i}"  # the 16th breaks the primary key
        return [Stmt(ERROR, ("unit", f"first of {i}", 1.0)),
                Stmt("INSERT INTO orphan_statuses (wamid, status, received_at) VALUES ($1, 'sent', 0)", (wamid,))]

    outcomes = await asyncio.gather(*(db.write(unit(i)) for i in range(31)), return_exceptions=True)
    assert db.groups - before == 1  # type: ignore[attr-defined]  # all 31 in one group commit
    assert isinstance(outcomes[15], IntegrityError)
    assert [o for i, o in enumerate(outcomes) if i != 15] == [[1, 1]] * 30
    # Nothing of the failed unit was written, not even its first statement; the 30 others all were.
    assert await db.fetchval("SELECT COUNT(*) FROM errors WHERE message = 'first of 15'") == 0
    assert await count(db) == 30
    assert await count(db, "orphan_statuses") == 31


async def test_compare_and_set_conflict_undoes_the_whole_unit(db: Database) -> None:
    await db.execute("INSERT INTO orphan_statuses (wamid, status, received_at) VALUES ('w', 'sent', 0)")
    flip = "UPDATE orphan_statuses SET status = 'read' WHERE wamid = 'w' AND status = $1"
    with pytest.raises(Conflict):
        await db.write([Stmt(ERROR, ("cas", "before the check", 1.0)), Stmt(flip, ("delivered",), expect=1)])
    assert await count(db) == 0  # the unit's first statement was undone with it
    assert await db.write([Stmt(flip, ("sent",), expect=1)]) == [1]
    assert await db.fetchval("SELECT status FROM orphan_statuses") == "read"


async def test_rows_counts_and_many(db: Database) -> None:
    rows = [("many", f"m{i}", float(i)) for i in range(5)]
    results = await db.write([
        Stmt(ERROR, many=rows),
        Stmt("UPDATE errors SET message = message || '!' WHERE created_at >= $1", (2.0,)),
        Stmt("SELECT message FROM errors WHERE created_at < $1 ORDER BY id", (2.0,), rows=True),
        Stmt("DELETE FROM errors WHERE created_at < 1"),
    ])
    assert results[0] is None and results[1] == 3 and results[3] == 1
    assert [r["message"] for r in results[2]] == ["m0", "m1"]
    new_id = await db.insert("INSERT INTO errors (type, message, created_at) VALUES ('x', 'y', 9) RETURNING id")
    assert isinstance(new_id, int) and new_id > 5
    assert await db.execute("UPDATE errors SET type = 'z' WHERE id = $1", new_id) == 1


async def test_urgent_units_go_first_and_a_group_takes_at_most_the_limit_of_others(db: Database) -> None:
    # Everything below is queued in one go, before the writer runs: normal units first, urgent after.
    normal = [db.write([Stmt(ERROR, ("normal", str(i), 1.0))]) for i in range(MAX_UNITS_PER_GROUP + 10)]
    urgent = [db.write([Stmt(ERROR, ("urgent", str(i), 1.0))], urgent=True) for i in range(5)]
    before = db.groups  # type: ignore[attr-defined]
    await asyncio.gather(*normal, *urgent)
    order = [r["type"] for r in await db.fetch("SELECT type FROM errors ORDER BY id")]
    assert order[:5] == ["urgent"] * 5
    assert order[5:] == ["normal"] * (MAX_UNITS_PER_GROUP + 10)
    assert db.groups - before == 2  # type: ignore[attr-defined]  # the limit split the normal ones


async def test_transaction_rolls_back_on_error_and_nested_calls_join_it(db: Database) -> None:
    with pytest.raises(RuntimeError, match="roll back"):
        async with db.transaction() as tx:
            await tx.execute(ERROR, "tx", "inside", 1.0)
            await db.write([Stmt(ERROR, ("tx", "joined", 1.0))])  # joins the open transaction
            async with db.transaction() as inner:
                assert inner is tx
                assert await db.fetchval("SELECT COUNT(*) FROM errors") == 2  # reads see the transaction
            raise RuntimeError("roll back")
    assert await count(db) == 0
    assert not db.in_transaction
    async with db.transaction() as tx:
        await tx.executemany(ERROR, [("tx", "a", 1.0), ("tx", "b", 1.0)])
    assert await count(db) == 2


async def test_a_failing_unit_inside_a_transaction_is_undone_and_the_transaction_goes_on(db: Database) -> None:
    await db.execute("INSERT INTO orphan_statuses (wamid, status, received_at) VALUES ('taken', 'sent', 0)")
    async with db.transaction() as tx:
        await tx.execute(ERROR, "tx", "kept", 1.0)
        with pytest.raises(IntegrityError):
            await tx.run([Stmt(ERROR, ("tx", "undone", 1.0)),
                          Stmt("INSERT INTO orphan_statuses (wamid, status, received_at) VALUES ('taken', 'x', 0)")])
        await tx.execute(ERROR, "tx", "after", 1.0)
    messages = [r["message"] for r in await db.fetch("SELECT message FROM errors ORDER BY id")]
    assert messages == ["kept", "after"]  # the unit ran in a savepoint of the transaction


async def test_transactions_are_exclusive_read_modify_write(db: Database) -> None:
    await db.execute("INSERT INTO orphan_statuses (wamid, status, received_at) VALUES ('counter', '0', 0)")

    async def increment() -> None:
        async with db.transaction() as tx:
            value = int(await tx.fetchval("SELECT status FROM orphan_statuses WHERE wamid = 'counter'"))
            await asyncio.sleep(0)  # let the others try to read the same value meanwhile
            await tx.execute("UPDATE orphan_statuses SET status = $1 WHERE wamid = 'counter'", str(value + 1))

    await asyncio.gather(*(increment() for _ in range(20)))
    assert await db.fetchval("SELECT status FROM orphan_statuses WHERE wamid = 'counter'") == "20"


async def test_rows_work_as_records_and_dicts(db: Database) -> None:
    await db.execute(
        "INSERT INTO inbox (wamid, phone_number_id, customer_id, type, payload, received_at, sent_at) "
        "VALUES ('w1', 'b', 'c', 'text', '{}', 1.5, 1700000000)")
    row = await db.fetchrow("SELECT * FROM inbox")
    assert row is not None
    assert row["wamid"] == row[1] == "w1" and "status" in row.keys()
    assert dict(row)["received_at"] == 1.5
    stored = row_to(InboxRow, row)
    assert (stored.wamid, stored.status, stored.sent_at, stored.attempts) == ("w1", "pending", 1700000000, 0)
    assert await db.fetchrow("SELECT * FROM inbox WHERE wamid = 'none'") is None
    assert await db.fetchval("SELECT wamid FROM inbox WHERE wamid = 'none'") is None


async def test_full_text_search_ignores_accents_and_matches_prefixes(db: Database) -> None:
    repos = Repositories.on(db)
    await repos.products.upsert_many([
        ProductInput("CAF-1", "Caffè d'orzo", "Bevanda senza caffeina", 450, "EUR", 5, True),
        ProductInput("PAN-1", "Pane integrale", "Farina di grano", 320, "EUR", 5, True),
        ProductInput("TE-1", "Tè verde", "Foglie intere, caffè escluso", 500, "EUR", 5, True),
        ProductInput("OLD-1", "Caffè vecchio", "", 100, "EUR", 0, False),
    ])

    async def skus(text: str) -> list[str]:
        return [p.sku for p in await repos.products.search(text)]

    assert await skus("caffe") == ["CAF-1", "TE-1"]  # accents folded; the name counts more than the description
    assert await skus("CAFFÈ") == ["CAF-1", "TE-1"]
    assert await skus("integ") == ["PAN-1"]  # a prefix
    assert await skus("te verde") == ["TE-1"]
    assert sorted(await skus("pane verde")) == ["PAN-1", "TE-1"]  # no product has both: any word will do
    assert await skus("caf* OR te:*") != []  # query syntax typed by a customer is only words
    assert await skus("'; DROP TABLE products; --") == []
    assert await repos.products.count() == 4

    await repos.knowledge.set_pages(["Spediamo in tutta Italia in 48 ore.", "Perché il pane è buono: lievito madre.",
                                     "   "])
    assert await repos.knowledge.page_count() == 2
    hits = await repos.knowledge.search('"perche"', 5)  # the query bot.ai.knowledge.fts_query makes
    assert [h.page for h in hits] == [2] and "Perché il pane" in hits[0].text
    hits = await repos.knowledge.search('"spediamo" OR "lievito"', 5)
    assert sorted(h.page for h in hits) == [1, 2]
    assert await repos.knowledge.search('"motocicletta"', 5) == []
    await repos.knowledge.set_pages([])
    assert await repos.knowledge.page_count() == 0


async def test_the_migrate_command_applies_once_then_finds_nothing(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = Config(data_dir=tmp_path / "data", database=fresh_database_url(tmp_path))
    assert await migrate.run(config, []) == 0
    out = capsys.readouterr().out
    count = len(load_migrations(Database.create(config.database_url).dialect))
    assert f"applied {count} migration(s)" in out and "0001_core" in out and "0005_templates" in out
    assert f"schema version {load_migrations('sqlite')[-1][0]}" in out
    assert await migrate.run(config, []) == 0
    assert "is up to date: nothing to apply" in capsys.readouterr().out
    db = Database.create(config.database_url)
    await db.open(migrate=False)
    try:
        assert await db.fetchval("SELECT COUNT(*) FROM schema_migrations") == count
    finally:
        await db.close()


async def test_contact_search_takes_wildcards_and_backslashes_literally(db: Database) -> None:
    repos = Repositories.on(db)
    for i, name in enumerate(["Sconto 50%", "Sconto 500", "anna_b", "annaxb", "back\\slash", "BACKSLASH"]):
        contact = await repos.contacts.ensure("b", f"c{i}", wa_id=f"39333000000{i}")
        await repos.contacts.update(contact.id, source="operator", name=name)

    async def names(query: str) -> list[str]:
        return sorted(c.name or "" for c in await repos.contacts.page(query=query))

    assert await names("50%") == ["Sconto 50%"]
    assert await names("a_b") == ["anna_b"]
    assert await names("k\\s") == ["back\\slash"]
    assert await names("SCONTO") == ["Sconto 50%", "Sconto 500"]  # case-insensitive on both backends
    assert await names("0000003") == ["annaxb"]  # by number
