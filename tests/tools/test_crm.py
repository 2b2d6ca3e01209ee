"""The CRM repositories: contact names, catalogue search quality, orders and their totals, money."""

from __future__ import annotations

import pytest

from bot.persistence import Repositories
from bot.persistence.crm import OrderRejected, ProductInput, fts_query
from bot.tools.money import PriceError, format_price, parse_price
from tests.tools.conftest import BUSINESS, CUSTOMER, load_sample_catalogue


async def test_contact_names_from_whatsapp_never_replace_a_given_name(repos: Repositories) -> None:
    first = await repos.contacts.ensure(BUSINESS, CUSTOMER, wa_id=CUSTOMER, profile_name="Giulia")
    assert (first.name, first.name_source, first.language) == ("Giulia", "whatsapp", None)
    renamed = await repos.contacts.ensure(BUSINESS, CUSTOMER, profile_name="Giulia R.", language="it")
    assert (renamed.id, renamed.name, renamed.language, renamed.wa_id) == (first.id, "Giulia R.", "it", CUSTOMER)
    same = await repos.contacts.ensure(BUSINESS, CUSTOMER, profile_name="Giulia R.")
    assert same.updated_at == renamed.updated_at  # nothing changed, nothing written
    await repos.contacts.update(first.id, source="tool", name="Giulia Rossi", notes="prefers mornings")
    after = await repos.contacts.ensure(BUSINESS, CUSTOMER, profile_name="G")
    assert (after.name, after.name_source) == ("Giulia Rossi", "tool")
    await repos.contacts.update(first.id, source="operator", notes="VIP")
    notes = (await repos.contacts.get(first.id)).notes  # type: ignore[union-attr]
    assert notes == "prefers mornings\nVIP"  # appended, never lost
    assert [c.name for c in await repos.contacts.page(query="rossi")] == ["Giulia Rossi"]


async def test_search_quality_on_the_sample_catalogue(repos: Repositories) -> None:
    await load_sample_catalogue(repos)

    async def names(query: str) -> list[str]:
        return [p.name for p in await repos.products.search(query, limit=5)]

    assert (await names("pane integrale"))[0] == "Pane Integrale 500g"
    assert (await names("PANE INTEGRALE"))[0] == "Pane Integrale 500g"
    assert (await names("integ"))[0] == "Pane Integrale 500g"  # prefix of a partial word
    assert "Caffè Espresso 250g" in await names("caffe")  # accents folded
    assert "Caffè Espresso 250g" in await names("CAFFÈ espresso")
    assert (await names("borsa rossa"))[0] == "Borsa Rossa in pelle"
    assert (await names("borsa rossa economica"))[0] == "Borsa Rossa in pelle"  # falls back to any word
    assert (await names("lievito madre"))[0] == "Pane Integrale 500g"  # from the description
    assert (await names("BOR-ROS-PEL"))[0] == "Borsa Rossa in pelle"  # by sku
    assert await names("panettone") == []  # inactive products are not offered
    assert await names("motocicletta") == []
    # FTS5 syntax typed by a customer is just words, never an error.
    assert await names('pane" OR NEAR( * AND') != []
    assert await names("!!! ???") == []


async def test_the_search_index_follows_product_changes(repos: Repositories) -> None:
    await load_sample_catalogue(repos)
    await repos.products.upsert_many([ProductInput("PAN-INT-500", "Pagnotta Rustica", "", 350, "EUR", 4, True)])
    assert [p.sku for p in await repos.products.search("pagnotta")] == ["PAN-INT-500"]
    assert await repos.products.search("integrale") == []
    await repos.db.execute("DELETE FROM products WHERE sku = 'PAN-INT-500'")
    assert await repos.products.search("pagnotta") == []


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('pane "integ') == '"pane"* "integ"*'
    assert fts_query("a b", any_word=True) == '"a"* OR "b"*'
    assert fts_query("  ") is None


async def test_orders_are_priced_by_the_server_and_problems_are_listed(repos: Repositories) -> None:
    await load_sample_catalogue(repos)
    contact = await repos.contacts.ensure(BUSINESS, CUSTOMER, profile_name="Giulia")
    order = await repos.orders.create_draft(
        contact.id, [("PAN-INT-500", 2), ("CAF-ESP-250", 1), ("PAN-INT-500", 1)], notes=None
    )
    assert order.status == "draft" and order.code.startswith("ORD-") and len(order.code) == 10
    assert [(ln.sku, ln.quantity, ln.line_total_cents) for ln in order.lines] == [
        ("PAN-INT-500", 3, 960), ("CAF-ESP-250", 1, 690),
    ]
    assert order.total_cents == 1650
    with pytest.raises(OrderRejected) as caught:
        await repos.orders.create_draft(
            contact.id,
            [("NOPE", 1), ("CAF-ESP-250", 0), ("OLI-EVO-750", 1001), ("CIO-FON-100", 1), ("PAN-NAT-1KG", 1),
             ("BOR-ROS-PEL", 6)],
            notes=None,
        )
    problems = caught.value.problems
    assert len(problems) == 6
    assert "NOPE: there is no product" in problems[0]
    assert "at least 1" in problems[1]
    assert "at most 1000" in problems[2]
    assert "out of stock" in problems[3]
    assert "no longer sold" in problems[4]
    assert "only 5 left" in problems[5]
    assert await repos.db.fetchval("SELECT COUNT(*) FROM orders") == 1


def test_money() -> None:
    assert parse_price("12.50") == 1250
    assert parse_price("12,5") == 1250
    assert parse_price(" 7 ") == 700
    for bad in ("", "-1", "1.234,50", "12.505", "abc"):
        with pytest.raises(PriceError):
            parse_price(bad)
    assert format_price(123450, "EUR", "it") == "1.234,50 €"
    assert format_price(1250, "EUR", "en") == "€12.50"
    assert format_price(1250, "CHF", "en") == "12.50 CHF"
    assert format_price(1250, "EUR", "fr") == "12,50 €"
    assert format_price(5, "EUR", None) == "€0.05"
