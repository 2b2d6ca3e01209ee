-- The CRM the model works on: contacts, the product catalogue (with full-text search), orders.

CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    phone_number_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    wa_id TEXT,
    user_id TEXT,
    name TEXT,
    -- Who set the name: the WhatsApp profile name may only replace a name that also came from WhatsApp.
    name_source TEXT NOT NULL DEFAULT 'whatsapp' CHECK (name_source IN ('whatsapp', 'operator', 'tool')),
    email TEXT,
    company TEXT,
    language TEXT,
    notes TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (phone_number_id, customer_id)
);
CREATE INDEX contacts_wa_id ON contacts (wa_id);
CREATE INDEX contacts_updated ON contacts (updated_at DESC);

CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    currency TEXT NOT NULL DEFAULT 'EUR',
    stock INTEGER NOT NULL DEFAULT 0 CHECK (stock >= 0),
    active INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

-- External-content FTS5 index over the catalogue. remove_diacritics 2 folds "Caffè" to "caffe",
-- so customers who type without accents still find the product.
CREATE VIRTUAL TABLE products_fts USING fts5(
    sku, name, description,
    content = 'products', content_rowid = 'id',
    tokenize = "unicode61 remove_diacritics 2"
);

-- The index is kept in step by triggers, so no code path can forget to update it.
CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
    INSERT INTO products_fts (rowid, sku, name, description) VALUES (new.id, new.sku, new.name, new.description);
END;
CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
    INSERT INTO products_fts (products_fts, rowid, sku, name, description)
    VALUES ('delete', old.id, old.sku, old.name, old.description);
END;
CREATE TRIGGER products_fts_update AFTER UPDATE OF sku, name, description ON products BEGIN
    INSERT INTO products_fts (products_fts, rowid, sku, name, description)
    VALUES ('delete', old.id, old.sku, old.name, old.description);
    INSERT INTO products_fts (rowid, sku, name, description) VALUES (new.id, new.sku, new.name, new.description);
END;

CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    contact_id INTEGER NOT NULL REFERENCES contacts (id),
    status TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'confirmed', 'cancelled')),
    total_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    notes TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    confirmed_at REAL
);
CREATE INDEX orders_contact ON orders (contact_id, id);
CREATE INDEX orders_status ON orders (status, created_at);

CREATE TABLE order_lines (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 1),
    unit_price_cents INTEGER NOT NULL,
    line_total_cents INTEGER NOT NULL
);
CREATE INDEX order_lines_order ON order_lines (order_id, id);

-- Links sent to customers to confirm an order. Only a hash of the token is kept, so a copy of the
-- database cannot be used to confirm someone else's order.
CREATE TABLE order_confirmations (
    token_sha256 TEXT PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
);
CREATE INDEX order_confirmations_order ON order_confirmations (order_id);
