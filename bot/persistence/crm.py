"""The CRM: contacts linked to conversations, the product catalogue with full-text search, and orders."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import aiosqlite

from bot.persistence.db import Database, Row, row_to

NameSource = Literal["whatsapp", "operator", "tool"]
MAX_QUANTITY = 1000
# Crockford's alphabet: no I, L, O or U, so a code read aloud or retyped is hard to get wrong.
_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_QUERY_WORDS = 12


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
    def from_row(cls, row: Row) -> Contact:
        """Build from a `SELECT *` row."""
        return row_to(cls, row)


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
        now = time.time()
        name = (profile_name or "").strip() or None
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO contacts (phone_number_id, customer_id, wa_id, user_id, name, name_source, language, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'whatsapp', ?, ?, ?) "
                "ON CONFLICT (phone_number_id, customer_id) DO UPDATE SET "
                "wa_id = COALESCE(excluded.wa_id, contacts.wa_id), "
                "user_id = COALESCE(excluded.user_id, contacts.user_id), "
                "name = CASE WHEN contacts.name_source = 'whatsapp' THEN COALESCE(excluded.name, contacts.name) "
                "ELSE contacts.name END, "
                "language = COALESCE(excluded.language, contacts.language), "
                "updated_at = excluded.updated_at "
                # Only touch updated_at when something really changed.
                "WHERE (excluded.wa_id IS NOT NULL AND excluded.wa_id IS NOT contacts.wa_id) "
                "OR (excluded.user_id IS NOT NULL AND excluded.user_id IS NOT contacts.user_id) "
                "OR (contacts.name_source = 'whatsapp' AND excluded.name IS NOT NULL "
                "AND excluded.name IS NOT contacts.name) "
                "OR (excluded.language IS NOT NULL AND excluded.language IS NOT contacts.language)",
                (phone_number_id, customer_id, wa_id, user_id, name, language, now, now),
            )
            cur = await conn.execute(
                "SELECT * FROM contacts WHERE phone_number_id = ? AND customer_id = ?", (phone_number_id, customer_id)
            )
            row = await cur.fetchone()
            await cur.close()
        assert row is not None
        return Contact.from_row(row)

    async def get(self, contact_id: int) -> Contact | None:
        """One contact by id."""
        row = await self.db.fetchone("SELECT * FROM contacts WHERE id = ?", (contact_id,))
        return None if row is None else Contact.from_row(row)

    async def for_conversation(self, phone_number_id: str, customer_id: str) -> Contact | None:
        """The contact of a conversation, if it has one yet."""
        row = await self.db.fetchone(
            "SELECT * FROM contacts WHERE phone_number_id = ? AND customer_id = ?", (phone_number_id, customer_id)
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
    ) -> Contact:
        """Set the given fields (None leaves a field as it is); a new name records who set it."""
        sets: list[str] = []
        params: list[object] = []
        if name is not None:
            sets += ["name = ?", "name_source = ?"]
            params += [name, source]
        if email is not None:
            sets.append("email = ?")
            params.append(email)
        if company is not None:
            sets.append("company = ?")
            params.append(company)
        if notes is not None:
            if append_notes:
                # Tools add to the notes; an operator's earlier notes are never lost.
                sets.append("notes = CASE WHEN notes IS NULL OR notes = '' THEN ? ELSE notes || char(10) || ? END")
                params += [notes, notes]
            else:
                sets.append("notes = ?")
                params.append(notes)
        async with self.db.transaction() as conn:
            if sets:
                await conn.execute(
                    f"UPDATE contacts SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                    (*params, time.time(), contact_id),
                )
            cur = await conn.execute("SELECT * FROM contacts WHERE id = ?", (contact_id,))
            row = await cur.fetchone()
            await cur.close()
        if row is None:
            raise LookupError(f"no contact with id {contact_id}")
        return Contact.from_row(row)

    async def page(self, *, query: str = "", limit: int = 50, offset: int = 0) -> list[Contact]:
        """Contacts, most recently updated first, optionally filtered by name, email, company or number."""
        where, params = "", []
        if query.strip():
            like = f"%{query.strip().replace('%', '').replace('_', '')}%"
            where = "WHERE name LIKE ? OR email LIKE ? OR company LIKE ? OR wa_id LIKE ?"
            params = [like, like, like, like]
        rows = await self.db.fetchall(
            f"SELECT * FROM contacts {where} ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
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
    def from_row(cls, row: Row) -> Product:
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
    words = _WORD.findall(text.lower())[:_MAX_QUERY_WORDS]
    if not words:
        return None
    terms = [f'"{word}"*' for word in words]
    return " OR ".join(terms) if any_word else " ".join(terms)


class ProductRepo:
    """The catalogue. Search goes through the products_fts index, which triggers keep in step."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert_many(self, products: Iterable[ProductInput]) -> tuple[int, int]:
        """Insert or update by sku in one transaction; returns (added, updated)."""
        added = updated = 0
        now = time.time()
        async with self.db.transaction() as conn:
            for p in products:
                cur = await conn.execute("SELECT 1 FROM products WHERE sku = ?", (p.sku,))
                exists = await cur.fetchone() is not None
                await cur.close()
                await conn.execute(
                    "INSERT INTO products (sku, name, description, price_cents, currency, stock, active, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (sku) DO UPDATE SET name = excluded.name, description = excluded.description, "
                    "price_cents = excluded.price_cents, currency = excluded.currency, stock = excluded.stock, "
                    "active = excluded.active, updated_at = excluded.updated_at",
                    (p.sku, p.name, p.description, p.price_cents, p.currency, p.stock, int(p.active), now, now),
                )
                if exists:
                    updated += 1
                else:
                    added += 1
        return added, updated

    async def get(self, sku: str) -> Product | None:
        """One product by sku (active or not)."""
        row = await self.db.fetchone("SELECT * FROM products WHERE sku = ?", (sku,))
        return None if row is None else Product.from_row(row)

    async def by_skus(self, skus: Sequence[str]) -> dict[str, Product]:
        """The products with these skus, keyed by sku; unknown skus are simply absent."""
        if not skus:
            return {}
        marks = ",".join("?" for _ in skus)
        rows = await self.db.fetchall(f"SELECT * FROM products WHERE sku IN ({marks})", tuple(skus))
        return {r["sku"]: Product.from_row(r) for r in rows}

    async def search(self, text: str, *, limit: int = 5) -> list[Product]:
        """Active products best matching the words, ranked by bm25 (the name counts most).

        Every word must match first; when nothing has them all, products matching any word are
        offered instead, so "borsa rossa economica" still finds the red bag.
        """
        for any_word in (False, True):
            query = fts_query(text, any_word=any_word)
            if query is None:
                return []
            rows = await self.db.fetchall(
                "SELECT p.* FROM products_fts JOIN products p ON p.id = products_fts.rowid "
                "WHERE products_fts MATCH ? AND p.active = 1 "
                "ORDER BY bm25(products_fts, 2.0, 10.0, 1.0), p.name LIMIT ?",
                (query, limit),
            )
            if rows:
                return [Product.from_row(r) for r in rows]
        return []

    async def count(self) -> int:
        """How many products the catalogue holds."""
        return int(await self.db.scalar("SELECT COUNT(*) FROM products") or 0)


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
        async with self.db.transaction() as conn:
            marks = ",".join("?" for _ in merged)
            cur = await conn.execute(f"SELECT * FROM products WHERE sku IN ({marks})", tuple(merged))
            products = {r["sku"]: Product.from_row(r) for r in await cur.fetchall()}
            await cur.close()
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
            order_id = await self._insert_order(conn, contact_id, total, currency, notes, now)
            await conn.executemany(
                "INSERT INTO order_lines (order_id, sku, name, quantity, unit_price_cents, line_total_cents) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(order_id, ln.sku, ln.name, ln.quantity, ln.unit_price_cents, ln.line_total_cents) for ln in lines],
            )
            order = await self._load(conn, order_id)
        assert order is not None
        return order

    @staticmethod
    async def _insert_order(conn: aiosqlite.Connection, contact_id: int, total: int, currency: str,
                            notes: str | None, now: float) -> int:
        for _ in range(10):
            try:
                cur = await conn.execute(
                    "INSERT INTO orders (code, contact_id, status, total_cents, currency, notes, created_at, "
                    "updated_at) VALUES (?, ?, 'draft', ?, ?, ?, ?, ?)",
                    (new_order_code(), contact_id, total, currency, notes, now, now),
                )
            except aiosqlite.IntegrityError as exc:
                if "orders.code" in str(exc):
                    continue  # one in a billion: draw another code
                raise
            order_id = cur.lastrowid
            await cur.close()
            assert order_id is not None
            return order_id
        raise RuntimeError("could not draw a free order code")

    @staticmethod
    async def _load(conn: aiosqlite.Connection, order_id: int) -> Order | None:
        cur = await conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,))
        row = await cur.fetchone()
        await cur.close()
        if row is None:
            return None
        cur = await conn.execute("SELECT * FROM order_lines WHERE order_id = ? ORDER BY id", (order_id,))
        lines = tuple(
            OrderLine(r["sku"], r["name"], r["quantity"], r["unit_price_cents"], r["line_total_cents"])
            for r in await cur.fetchall()
        )
        await cur.close()
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
        return await self._load(self.db.conn, order_id)

    async def for_contact(self, contact_id: int, *, limit: int = 20) -> list[Order]:
        """A contact's orders, newest first."""
        rows = await self.db.fetchall(
            "SELECT id FROM orders WHERE contact_id = ? ORDER BY id DESC LIMIT ?", (contact_id, limit)
        )
        orders = [await self._load(self.db.conn, r["id"]) for r in rows]
        return [o for o in orders if o is not None]

    async def add_confirmation(self, order_id: int, token_sha256: str, *, now: float, expires_at: float) -> None:
        """Store (the hash of) a new confirmation link for an order."""
        await self.db.execute(
            "INSERT INTO order_confirmations (token_sha256, order_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (token_sha256, order_id, now, expires_at),
        )

    async def confirmation(self, token_sha256: str, *, now: float) -> Confirmation:
        """Where a link stands, without changing anything (for showing the page)."""
        return await self._check(self.db.conn, token_sha256, now)

    async def _check(self, conn: aiosqlite.Connection, token_sha256: str, now: float) -> Confirmation:
        cur = await conn.execute("SELECT * FROM order_confirmations WHERE token_sha256 = ?", (token_sha256,))
        link = await cur.fetchone()
        await cur.close()
        if link is None:
            return Confirmation("unknown", None)
        order = await self._load(conn, link["order_id"])
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
        async with self.db.transaction() as conn:
            state = await self._check(conn, token_sha256, now)
            if state.state != "ready" or state.order is None:
                return state
            order = state.order
            short: list[str] = []
            for line in order.lines:
                cur = await conn.execute("SELECT stock, active FROM products WHERE sku = ?", (line.sku,))
                product = await cur.fetchone()
                await cur.close()
                if product is None or not product["active"] or product["stock"] < line.quantity:
                    short.append(line.name)
            if short:
                return Confirmation("unavailable", order, tuple(short))
            for line in order.lines:
                await conn.execute(
                    "UPDATE products SET stock = stock - ?, updated_at = ? WHERE sku = ?",
                    (line.quantity, now, line.sku),
                )
            await conn.execute(
                "UPDATE orders SET status = 'confirmed', confirmed_at = ?, updated_at = ? WHERE id = ?",
                (now, now, order.id),
            )
            await conn.execute(
                "UPDATE order_confirmations SET used_at = ? WHERE order_id = ? AND used_at IS NULL", (now, order.id)
            )
            confirmed = await self._load(conn, order.id)
        return Confirmation("confirmed", confirmed)
