"""The CRM: contacts linked to conversations, the product catalogue with full-text search, and orders."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Literal

from bot.domain.conversation import ConversationKey
from bot.persistence.database import (
    MAX_QUERY_WORDS,
    TS_CONFIG,
    Database,
    Record,
    Stmt,
    Tx,
    like_contains,
    marks,
    row_to,
    ts_query,
    values_stmts,
)
from bot.persistence.events import event_stmts, order_payload

NameSource = Literal["whatsapp", "operator", "tool"]
MAX_QUANTITY = 1000
# Crockford's alphabet: no I, L, O or U, so a code read aloud or retyped is hard to get wrong.
_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Contact:
    """A customer as the CRM knows them, linked to one conversation."""

    id: int
    phone_number_id: str
    customer_id: str
    wa_id: str | None
    user_id: str | None
    name: str | None
    name_source: str
    email: str | None
    company: str | None
    language: str | None
    notes: str | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Record) -> Contact:
        """Build from a `SELECT *` row."""
        return row_to(cls, row)


_CONTACT_COLUMNS = tuple(f.name for f in fields(Contact))


async def conversation_and_contact(db: Database, business: str, customer: str) -> tuple[Record | None,
                                                                                     Contact | None]:
    """A conversation's row and its contact in one read (what an actor loads when it activates)."""
    aliased = ", ".join(f"k.{c} AS k_{c}" for c in _CONTACT_COLUMNS)
    row = await db.fetchrow(
        f"SELECT c.*, {aliased} FROM conversations c LEFT JOIN contacts k "
        "ON k.phone_number_id = c.phone_number_id AND k.customer_id = c.customer_id "
        "WHERE c.phone_number_id = $1 AND c.customer_id = $2", business, customer)
    if row is None:
        return None, None
    if row["k_id"] is None:
        return row, None
    return row, row_to(Contact, {c: row[f"k_{c}"] for c in _CONTACT_COLUMNS})


def ensure_contact_stmt(phone_number_id: str, customer_id: str, *, wa_id: str | None, user_id: str | None,
                        name: str | None, language: str | None, now: float | None = None) -> Stmt:
    """Get or create a conversation's contact, refreshing what WhatsApp tells us; returns the row.

    The WhatsApp profile name only replaces a name that itself came from WhatsApp: a name the
    customer gave the assistant, or an operator typed, is never overwritten by it.
    """
    changed = (
        "(excluded.wa_id IS NOT NULL AND excluded.wa_id IS DISTINCT FROM contacts.wa_id) "
        "OR (excluded.user_id IS NOT NULL AND excluded.user_id IS DISTINCT FROM contacts.user_id) "
        "OR (contacts.name_source = 'whatsapp' AND excluded.name IS NOT NULL "
        "AND excluded.name IS DISTINCT FROM contacts.name) "
        "OR (excluded.language IS NOT NULL AND excluded.language IS DISTINCT FROM contacts.language)"
    )
    return Stmt(
        "INSERT INTO contacts (phone_number_id, customer_id, wa_id, user_id, name, name_source, language, "
        "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'whatsapp', $6, $7, $7) "
        "ON CONFLICT (phone_number_id, customer_id) DO UPDATE SET "
        "wa_id = COALESCE(excluded.wa_id, contacts.wa_id), "
        "user_id = COALESCE(excluded.user_id, contacts.user_id), "
        "name = CASE WHEN contacts.name_source = 'whatsapp' THEN COALESCE(excluded.name, contacts.name) "
        "ELSE contacts.name END, "
        "language = COALESCE(excluded.language, contacts.language), "
        # Only touch updated_at when something really changed.
        f"updated_at = CASE WHEN {changed} THEN excluded.updated_at ELSE contacts.updated_at END RETURNING *",
        (phone_number_id, customer_id, wa_id, user_id, name, language, now or time.time()), rows=True,
    )


_ARRIVAL_CONTACT_SQL = (
    "INSERT INTO contacts (phone_number_id, customer_id, wa_id, user_id, name, name_source, created_at, updated_at) "
    "VALUES {rows} ON CONFLICT (phone_number_id, customer_id) DO UPDATE SET "
    "wa_id = COALESCE(excluded.wa_id, contacts.wa_id), user_id = COALESCE(excluded.user_id, contacts.user_id), "
    "name = CASE WHEN contacts.name_source = 'whatsapp' THEN COALESCE(excluded.name, contacts.name) "
    "ELSE contacts.name END, "
    "updated_at = CASE WHEN (excluded.wa_id IS NOT NULL AND excluded.wa_id IS DISTINCT FROM contacts.wa_id) "
    "OR (contacts.name_source = 'whatsapp' AND excluded.name IS NOT NULL AND excluded.name IS DISTINCT FROM "
    "contacts.name) THEN excluded.updated_at ELSE contacts.updated_at END"
)

_NEW_CONTACT_SQL = _ARRIVAL_CONTACT_SQL.split(" DO UPDATE ")[0] + " DO NOTHING"


def arrival_contact_stmts(people: Sequence[tuple[str, str, str | None, str | None, str | None]], *,
                          now: float, owned: Callable[[tuple[str, str]], bool] = lambda _key: True) -> list[Stmt]:
    """Every customer gets a contact with their first message: (business, customer, wa_id, user_id, profile name).

    Existing contacts are refreshed only for the conversations this process runs (`owned`); another
    process's actor refreshes its own (`refresh_contact_stmt`), so no process waits on the other's locks.
    """
    unique = dict(sorted({(p[0], p[1]): p for p in people}.items()))  # one row per contact, in key order
    stmts: list[Stmt] = []
    for sql, is_owned in ((_ARRIVAL_CONTACT_SQL, True), (_NEW_CONTACT_SQL, False)):
        stmts += values_stmts(sql, [
            (business, customer, wa_id, user_id, (name or "").strip() or None, "whatsapp", now, now)
            for key, (business, customer, wa_id, user_id, name) in unique.items() if owned(key) == is_owned])
    return stmts


def refresh_contact_stmt(contact_id: int, *, wa_id: str | None, user_id: str | None, name: str | None,
                         language: str | None, now: float) -> Stmt:
    """What a turn learnt of its customer (the ingest refreshes only its own process's contacts).

    A name given to the assistant or typed by an operator is never replaced by the WhatsApp one.
    """
    return Stmt(
        "UPDATE contacts SET wa_id = COALESCE($1, wa_id), user_id = COALESCE($2, user_id), "
        "name = CASE WHEN name_source = 'whatsapp' THEN COALESCE($3, name) ELSE name END, "
        "language = COALESCE($4, language), updated_at = $5 WHERE id = $6",
        (wa_id, user_id, name, language, now, contact_id))


def contact_key(contact: Contact) -> ConversationKey:
    """The conversation a contact belongs to."""
    return ConversationKey(contact.phone_number_id, contact.customer_id)


class ContactRepo:
    """Contacts: created with the conversation's first AI turn, enriched by tools and operators."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure(
        self,
        phone_number_id: str,
        customer_id: str,
        *,
        wa_id: str | None = None,
        user_id: str | None = None,
        profile_name: str | None = None,
        language: str | None = None,
    ) -> Contact:
        """Get or create the conversation's contact, refreshing what WhatsApp tells us.

        The WhatsApp profile name only replaces a name that itself came from WhatsApp: a name the
        customer gave the assistant, or an operator typed, is never overwritten by it.
        """
        name = (profile_name or "").strip() or None
        rows = (await self.db.write([ensure_contact_stmt(
            phone_number_id, customer_id, wa_id=wa_id, user_id=user_id, name=name, language=language)]))[0]
        return Contact.from_row(rows[0])

    async def get(self, contact_id: int) -> Contact | None:
        """One contact by id."""
        row = await self.db.fetchrow("SELECT * FROM contacts WHERE id = $1", contact_id)
        return None if row is None else Contact.from_row(row)

    async def for_conversation(self, phone_number_id: str, customer_id: str) -> Contact | None:
        """The contact of a conversation, if it has one yet."""
        row = await self.db.fetchrow(
            "SELECT * FROM contacts WHERE phone_number_id = $1 AND customer_id = $2", phone_number_id, customer_id
        )
        return None if row is None else Contact.from_row(row)

    async def update(
        self,
        contact_id: int,
        *,
        source: NameSource,
        name: str | None = None,
        email: str | None = None,
        company: str | None = None,
        notes: str | None = None,
        append_notes: bool = True,
        language: str | None = None,
    ) -> Contact:
        """Set the given fields (None leaves a field as it is); a new name records who set it."""
        sets: list[str] = []
        params: list[object] = []

        def param(value: object) -> str:
            params.append(value)
            return f"${len(params)}"

        if name is not None:
            sets += [f"name = {param(name)}", f"name_source = {param(source)}"]
        if email is not None:
            sets.append(f"email = {param(email)}")
        if company is not None:
            sets.append(f"company = {param(company)}")
        if language is not None:
            sets.append(f"language = {param(language)}")
        if notes is not None:
            if append_notes:
                # Tools add to the notes; an operator's earlier notes are never lost.
                mark = param(notes)
                newline = param("\n")
                sets.append(f"notes = CASE WHEN notes IS NULL OR notes = '' THEN {mark} "
                            f"ELSE notes || {newline} || {mark} END")
            else:
                sets.append(f"notes = {param(notes)}")
        sets.append(f"updated_at = {param(time.time())}")
        rows = (await self.db.write([Stmt(
            f"UPDATE contacts SET {', '.join(sets)} WHERE id = {param(contact_id)} RETURNING *",
            tuple(params), rows=True)]))[0]
        if not rows:
            raise LookupError(f"no contact with id {contact_id}")
        row = rows[0]
        return Contact.from_row(row)

    async def page(self, *, query: str = "", limit: int = 50, offset: int = 0) -> list[Contact]:
        """Contacts, most recently updated first, optionally filtered by name, email, company or number."""
        where, params = "", []
        if query.strip():
            like = like_contains(query.strip().lower())
            where = ("WHERE lower(name) LIKE $1 ESCAPE '\\' OR lower(email) LIKE $1 ESCAPE '\\' "
                     "OR lower(company) LIKE $1 ESCAPE '\\' OR wa_id LIKE $1 ESCAPE '\\'")
            params = [like]
        n = len(params)
        rows = await self.db.fetch(
            f"SELECT * FROM contacts {where} ORDER BY updated_at DESC, id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
            *params, limit, offset,
        )
        return [Contact.from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Product:
    """One catalogue entry; the price is in cents so totals never suffer from rounding."""

    id: int
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    stock: int
    active: bool

    @classmethod
    def from_row(cls, row: Record) -> Product:
        """Build from a products row."""
        return row_to(cls, row)


@dataclass(frozen=True, slots=True)
class ProductInput:
    """A product to insert or update by sku (e.g. one row of an imported CSV)."""

    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    stock: int
    active: bool


def fts_query(text: str, *, any_word: bool = False) -> str | None:
    """A safe FTS5 query: every word quoted (no operator injection) and prefix-matched ("integ" → integrale)."""
    words = _WORD.findall(text.lower())[:MAX_QUERY_WORDS]
    if not words:
        return None
    terms = [f'"{word}"*' for word in words]
    return " OR ".join(terms) if any_word else " ".join(terms)


# The name counts most: bm25 column weights (sku, name, description) on SQLite, and on PostgreSQL the
# tsvector's weights (name A, sku B, description C) given the same ratios, as {D, C, B, A}.
_FTS5_SEARCH_SQL = (
    "SELECT p.* FROM products_fts JOIN products p ON p.id = products_fts.rowid "
    "WHERE products_fts MATCH $1 AND p.active = 1 "
    "ORDER BY bm25(products_fts, 2.0, 10.0, 1.0), p.name LIMIT $2"
)
_PG_SEARCH_SQL = (
    f"SELECT p.* FROM products p, to_tsquery('{TS_CONFIG}', $1) q WHERE p.search @@ q AND p.active = 1 "
    "ORDER BY ts_rank('{0.1, 0.1, 0.2, 1.0}', p.search, q) DESC, p.name LIMIT $2"
)


class ProductRepo:
    """The catalogue, searched by words.

    The index is products_fts on SQLite (kept in step by triggers) and the generated `search` tsvector
    on PostgreSQL.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert_many(self, products: Iterable[ProductInput]) -> tuple[int, int]:
        """Insert or update by sku in one transaction; returns (added, updated)."""
        items = list(products)
        now = time.time()
        async with self.db.transaction() as tx:
            known = {r[0] for r in await tx.fetch("SELECT sku FROM products")} if items else set()
            await tx.executemany(
                "INSERT INTO products (sku, name, description, price_cents, currency, stock, active, "
                "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) "
                "ON CONFLICT (sku) DO UPDATE SET name = excluded.name, description = excluded.description, "
                "price_cents = excluded.price_cents, currency = excluded.currency, stock = excluded.stock, "
                "active = excluded.active, updated_at = excluded.updated_at",
                [(p.sku, p.name, p.description, p.price_cents, p.currency, p.stock, int(p.active), now) for p in items],
            )
        skus = {p.sku for p in items}
        updated = len(skus & known)
        added = len(skus) - updated
        return added, updated

    async def get(self, sku: str) -> Product | None:
        """One product by sku (active or not)."""
        row = await self.db.fetchrow("SELECT * FROM products WHERE sku = $1", sku)
        return None if row is None else Product.from_row(row)

    async def by_skus(self, skus: Sequence[str]) -> dict[str, Product]:
        """The products with these skus, keyed by sku; unknown skus are simply absent."""
        if not skus:
            return {}
        rows = await self.db.fetch(f"SELECT * FROM products WHERE sku IN ({marks(len(skus))})", *skus)
        return {r["sku"]: Product.from_row(r) for r in rows}

    async def search(self, text: str, *, limit: int = 5) -> list[Product]:
        """Active products best matching the words (prefixes too), ranked with the name counting most.

        Every word must match first; when nothing has them all, products matching any word are
        offered instead, so "borsa rossa economica" still finds the red bag.
        """
        postgres = self.db.dialect == "postgres"
        for any_word in (False, True):
            query = ts_query(text, any_word=any_word) if postgres else fts_query(text, any_word=any_word)
            if query is None:
                return []
            rows = await self.db.fetch(_PG_SEARCH_SQL if postgres else _FTS5_SEARCH_SQL, query, limit)
            if rows:
                return [Product.from_row(r) for r in rows]
        return []

    async def count(self) -> int:
        """How many products the catalogue holds."""
        return int(await self.db.fetchval("SELECT COUNT(*) FROM products") or 0)


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One product line of an order, with the price as it was when the order was made."""

    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int


@dataclass(frozen=True, slots=True)
class Order:
    """An order and its lines; the total is always the server's sum of the lines."""

    id: int
    code: str
    contact_id: int
    status: str
    total_cents: int
    currency: str
    notes: str | None
    created_at: float
    confirmed_at: float | None
    lines: tuple[OrderLine, ...]


class OrderRejected(Exception):
    """The requested items cannot make an order; `problems` lists each reason, one per item."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


ConfirmState = Literal["ready", "confirmed", "unknown", "expired", "already_confirmed", "cancelled", "unavailable"]


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What a confirmation link leads to now, with the order when the link is known."""

    state: ConfirmState
    order: Order | None
    unavailable: tuple[str, ...] = ()  # names of products short of stock or no longer sold


def new_order_code() -> str:
    """A short random order code such as ORD-7K3Q9X (not a counter, which would reveal sales volume)."""
    return "ORD-" + "".join(secrets.choice(_CODE_ALPHABET) for _ in range(6))


class OrderRepo:
    """Draft orders from the model, confirmed by the customer through a one-time link."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_draft(self, contact_id: int, items: Sequence[tuple[str, int]], *, notes: str | None) -> Order:
        """Check every item against the catalogue and store a draft; raises OrderRejected listing each problem.

        Prices and totals come from the products table, never from the caller.
        """
        problems: list[str] = []
        merged: dict[str, int] = {}
        for sku, quantity in items:
            merged[sku.strip()] = merged.get(sku.strip(), 0) + quantity
        if not merged:
            raise OrderRejected(["the order has no items"])
        now = time.time()
        async with self.db.transaction() as tx:
            rows = await tx.fetch(f"SELECT * FROM products WHERE sku IN ({marks(len(merged))})", *merged)
            products = {r["sku"]: Product.from_row(r) for r in rows}
            for sku, quantity in merged.items():
                product = products.get(sku)
                if product is None:
                    problems.append(f"{sku}: there is no product with this code (use search_products to find it)")
                elif not product.active:
                    problems.append(f"{sku} ({product.name}): this product is no longer sold")
                elif quantity < 1:
                    problems.append(f"{sku} ({product.name}): the quantity must be at least 1")
                elif quantity > MAX_QUANTITY:
                    problems.append(f"{sku} ({product.name}): at most {MAX_QUANTITY} per order")
                elif product.stock <= 0:
                    problems.append(f"{sku} ({product.name}): out of stock")
                elif quantity > product.stock:
                    problems.append(f"{sku} ({product.name}): only {product.stock} left, {quantity} requested")
            currencies = {p.currency for p in products.values() if p.sku in merged}
            if len(currencies) > 1:
                problems.append(f"these products are priced in different currencies ({', '.join(sorted(currencies))})"
                                ": make one order per currency")
            if problems:
                raise OrderRejected(problems)
            lines = [
                OrderLine(sku, products[sku].name, qty, products[sku].price_cents, products[sku].price_cents * qty)
                for sku, qty in merged.items()
            ]
            total = sum(line.line_total_cents for line in lines)
            currency = next(iter(currencies))
            order_id = await self._insert_order(tx, contact_id, total, currency, notes, now)
            await tx.executemany(
                "INSERT INTO order_lines (order_id, sku, name, quantity, unit_price_cents, line_total_cents) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                [(order_id, ln.sku, ln.name, ln.quantity, ln.unit_price_cents, ln.line_total_cents) for ln in lines],
            )
            order = await self._load(tx, order_id)
            assert order is not None
            await tx.run(event_stmts("order.created", order_payload(order), now=now))
        return order

    @staticmethod
    async def _insert_order(tx: Tx, contact_id: int, total: int, currency: str,
                            notes: str | None, now: float) -> int:
        for _ in range(10):
            code = new_order_code()
            # The code is random: a clash is one in a billion, and then we simply draw another.
            if await tx.fetchval("SELECT 1 FROM orders WHERE code = $1", code) is not None:
                continue
            order_id = await tx.fetchval(
                "INSERT INTO orders (code, contact_id, status, total_cents, currency, notes, created_at, "
                "updated_at) VALUES ($1, $2, 'draft', $3, $4, $5, $6, $6) RETURNING id",
                code, contact_id, total, currency, notes, now,
            )
            return int(order_id)
        raise RuntimeError("could not draw a free order code")

    @staticmethod
    async def _load(db: Database | Tx, order_id: int) -> Order | None:
        row = await db.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        if row is None:
            return None
        lines = tuple(
            OrderLine(r["sku"], r["name"], r["quantity"], r["unit_price_cents"], r["line_total_cents"])
            for r in await db.fetch("SELECT * FROM order_lines WHERE order_id = $1 ORDER BY id", order_id)
        )
        return Order(
            id=row["id"],
            code=row["code"],
            contact_id=row["contact_id"],
            status=row["status"],
            total_cents=row["total_cents"],
            currency=row["currency"],
            notes=row["notes"],
            created_at=row["created_at"],
            confirmed_at=row["confirmed_at"],
            lines=lines,
        )

    async def get(self, order_id: int) -> Order | None:
        """One order with its lines."""
        return await self._load(self.db, order_id)

    async def for_contact(self, contact_id: int, *, limit: int = 20) -> list[Order]:
        """A contact's orders, newest first."""
        rows = await self.db.fetch(
            "SELECT id FROM orders WHERE contact_id = $1 ORDER BY id DESC LIMIT $2", contact_id, limit
        )
        orders = [await self._load(self.db, r["id"]) for r in rows]
        return [o for o in orders if o is not None]

    async def add_confirmation(self, order_id: int, token_sha256: str, *, now: float, expires_at: float) -> None:
        """Store (the hash of) a new confirmation link for an order."""
        await self.db.execute(
            "INSERT INTO order_confirmations (token_sha256, order_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            token_sha256, order_id, now, expires_at,
        )

    async def confirmation(self, token_sha256: str, *, now: float) -> Confirmation:
        """Where a link stands, without changing anything (for showing the page)."""
        return await self._check(self.db, token_sha256, now)

    async def _check(self, db: Database | Tx, token_sha256: str, now: float) -> Confirmation:
        link = await db.fetchrow("SELECT * FROM order_confirmations WHERE token_sha256 = $1", token_sha256)
        if link is None:
            return Confirmation("unknown", None)
        order = await self._load(db, link["order_id"])
        if order is None:
            return Confirmation("unknown", None)
        if order.status == "confirmed" or link["used_at"] is not None:
            return Confirmation("already_confirmed", order)
        if order.status == "cancelled":
            return Confirmation("cancelled", order)
        if link["expires_at"] <= now:
            return Confirmation("expired", order)
        return Confirmation("ready", order)

    async def confirm(self, token_sha256: str, *, now: float) -> Confirmation:
        """Confirm the link's order once: check stock, take it from stock, and spend every link of the order.

        Runs in one transaction (join it to queue the customer's message atomically), so two clicks
        at the same moment confirm once: the second sees 'already_confirmed'.
        """
        async with self.db.transaction() as tx:
            state = await self._check(tx, token_sha256, now)
            if state.state != "ready" or state.order is None:
                return state
            return await self._take_stock_and_confirm(tx, state.order, now)

    async def _take_stock_and_confirm(self, tx: Tx, order: Order, now: float) -> Confirmation:
        """Check and take the stock of a draft order, confirm it, spend its links, record the event."""
        short: list[str] = []
        for line in order.lines:
            product = await tx.fetchrow("SELECT stock, active FROM products WHERE sku = $1", line.sku)
            if product is None or not product["active"] or product["stock"] < line.quantity:
                short.append(line.name)
        if short:
            return Confirmation("unavailable", order, tuple(short))
        for line in order.lines:
            await tx.execute("UPDATE products SET stock = stock - $1, updated_at = $2 WHERE sku = $3",
                             line.quantity, now, line.sku)
        await tx.execute("UPDATE orders SET status = 'confirmed', confirmed_at = $1, updated_at = $1 WHERE id = $2",
                         now, order.id)
        await tx.execute("UPDATE order_confirmations SET used_at = $1 WHERE order_id = $2 AND used_at IS NULL",
                         now, order.id)
        confirmed = await self._load(tx, order.id)
        await tx.run(event_stmts("order.confirmed", order_payload(confirmed), now=now))
        return Confirmation("confirmed", confirmed)

    async def confirm_order(self, order_id: int, *, now: float) -> Confirmation:
        """An operator confirms a draft: the same stock check and effects as the customer's link.

        Join the transaction to queue the customer's message atomically, as the confirmation page does.
        """
        async with self.db.transaction() as tx:
            order = await self._load(tx, order_id)
            if order is None:
                return Confirmation("unknown", None)
            if order.status != "draft":
                return Confirmation("already_confirmed" if order.status == "confirmed" else "cancelled", order)
            return await self._take_stock_and_confirm(tx, order, now)

    async def cancel(self, order_id: int, *, now: float) -> Order | None:
        """Cancel a draft, or a confirmed order (its stock goes back); None when unknown.

        A cancelled order stays cancelled: its confirmation links say so from now on.
        """
        async with self.db.transaction() as tx:
            order = await self._load(tx, order_id)
            if order is None or order.status == "cancelled":
                return order
            if order.status == "confirmed":
                for line in order.lines:
                    await tx.execute("UPDATE products SET stock = stock + $1, updated_at = $2 WHERE sku = $3",
                                     line.quantity, now, line.sku)
            await tx.execute("UPDATE orders SET status = 'cancelled', updated_at = $1 WHERE id = $2", now, order.id)
            return await self._load(tx, order.id)

    async def page(self, *, status: str | None = None, since: float | None = None, until: float | None = None,
                   limit: int = 50, offset: int = 0) -> list[tuple[Order, Contact]]:
        """Orders newest first, optionally of one status and made within [since, until), with their contacts."""
        rows = await self.db.fetch(
            "SELECT o.id FROM orders o WHERE (CAST($1 AS TEXT) IS NULL OR o.status = $1) "
            "AND o.created_at >= $2 AND o.created_at < $3 ORDER BY o.created_at DESC, o.id DESC LIMIT $4 OFFSET $5",
            status, since if since is not None else 0.0, until if until is not None else 1e18, limit, offset)
        orders = await self._load_many([int(r["id"]) for r in rows])
        contact_ids = sorted({o.contact_id for o in orders})
        contacts = {}
        if contact_ids:
            found = await self.db.fetch(f"SELECT * FROM contacts WHERE id IN ({marks(len(contact_ids))})", *contact_ids)
            contacts = {int(r["id"]): Contact.from_row(r) for r in found}
        return [(o, contacts[o.contact_id]) for o in orders if o.contact_id in contacts]

    async def _load_many(self, ids: Sequence[int]) -> list[Order]:
        """Orders with their lines in two queries, in the order of `ids`."""
        if not ids:
            return []
        rows = await self.db.fetch(f"SELECT * FROM orders WHERE id IN ({marks(len(ids))})", *ids)
        lines: dict[int, list[OrderLine]] = {}
        for r in await self.db.fetch(
                f"SELECT * FROM order_lines WHERE order_id IN ({marks(len(ids))}) ORDER BY id", *ids):
            lines.setdefault(int(r["order_id"]), []).append(
                OrderLine(r["sku"], r["name"], r["quantity"], r["unit_price_cents"], r["line_total_cents"]))
        by_id = {int(r["id"]): Order(
            id=r["id"], code=r["code"], contact_id=r["contact_id"], status=r["status"], total_cents=r["total_cents"],
            currency=r["currency"], notes=r["notes"], created_at=r["created_at"], confirmed_at=r["confirmed_at"],
            lines=tuple(lines.get(int(r["id"]), ()))) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    async def latest_code(self, contact_id: int) -> str | None:
        """The code of the contact's most recent order (for the `{{order_code}}` of canned replies)."""
        value = await self.db.fetchval(
            "SELECT code FROM orders WHERE contact_id = $1 ORDER BY id DESC LIMIT 1", contact_id)
        return None if value is None else str(value)
