-- The support desk: labels, private notes, canned replies, read markers, full-text search over contacts
-- and messages, the indexes the inbox's tabs read through, and outbound event webhooks.
-- None of these tables is the conversation actor's: the web layer writes them directly.

CREATE TABLE labels (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    -- lower(name): "VIP" and "vip" are one label.
    name_key TEXT NOT NULL UNIQUE,
    color TEXT,
    created_at REAL NOT NULL,
    created_by TEXT
);

CREATE TABLE conversation_labels (
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    label_id INTEGER NOT NULL REFERENCES labels (id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    created_by TEXT,
    PRIMARY KEY (conversation_id, label_id)
);
CREATE INDEX conversation_labels_label ON conversation_labels (label_id, conversation_id);

-- Private notes in a thread: never sent, never shown to the model.
CREATE TABLE notes (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX notes_conversation ON notes (conversation_id, id);
CREATE INDEX notes_created ON notes (created_at);

CREATE TABLE canned_replies (
    id INTEGER PRIMARY KEY,
    shortcut TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT
);

-- How far operators have read a conversation: the last customer message (inbox id) shown to one.
CREATE TABLE read_markers (
    conversation_id INTEGER PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    last_inbox_id INTEGER NOT NULL,
    read_at REAL NOT NULL,
    read_by TEXT
);

-- The inbox's tabs, each read through an index in list order (needs-human first, then most recent),
-- so the first page never sorts the whole table.
CREATE INDEX conversations_desk ON conversations (is_test, needs_human DESC, last_activity_at DESC);
-- paused_until last: the paused tab's count reads this index alone.
CREATE INDEX conversations_paused ON conversations (is_test, paused, needs_human, last_activity_at DESC, paused_until);
CREATE INDEX conversations_assigned ON conversations (assigned_to, is_test, needs_human DESC, last_activity_at DESC);
CREATE INDEX conversations_failed ON conversations (state) WHERE state = 'failed';
CREATE INDEX orders_created ON orders (created_at);

-- Full-text search, accents and case ignored: remove_diacritics folds "Müller" to "muller", and the query
-- side (bot/persistence/search.py) also tries "mueller" as "muller". External-content tables kept in
-- step by triggers, like products_fts: no code path can forget to update them.
CREATE VIRTUAL TABLE contacts_fts USING fts5 (
    name, email, company, notes, wa_id,
    content = 'contacts', content_rowid = 'id',
    tokenize = "unicode61 remove_diacritics 2"
);
CREATE TRIGGER contacts_fts_insert AFTER INSERT ON contacts BEGIN
    INSERT INTO contacts_fts (rowid, name, email, company, notes, wa_id)
    VALUES (new.id, new.name, new.email, new.company, new.notes, new.wa_id);
END;
CREATE TRIGGER contacts_fts_delete AFTER DELETE ON contacts BEGIN
    INSERT INTO contacts_fts (contacts_fts, rowid, name, email, company, notes, wa_id)
    VALUES ('delete', old.id, old.name, old.email, old.company, old.notes, old.wa_id);
END;
-- Every customer message upserts its contact (SET name = …, wa_id = …): only a real change re-indexes it.
CREATE TRIGGER contacts_fts_update AFTER UPDATE OF name, email, company, notes, wa_id ON contacts
WHEN old.name IS NOT new.name OR old.email IS NOT new.email OR old.company IS NOT new.company
    OR old.notes IS NOT new.notes OR old.wa_id IS NOT new.wa_id BEGIN
    INSERT INTO contacts_fts (contacts_fts, rowid, name, email, company, notes, wa_id)
    VALUES ('delete', old.id, old.name, old.email, old.company, old.notes, old.wa_id);
    INSERT INTO contacts_fts (rowid, name, email, company, notes, wa_id)
    VALUES (new.id, new.name, new.email, new.company, new.notes, new.wa_id);
END;
INSERT INTO contacts_fts (contacts_fts) VALUES ('rebuild');

-- detail = none: the searches are words and prefixes, never phrases, so no positions are kept; that
-- makes the index smaller and the insert in every webhook's unit cheaper (about 10% of the ingest).
CREATE VIRTUAL TABLE inbox_fts USING fts5 (
    text, content = 'inbox', content_rowid = 'id', tokenize = "unicode61 remove_diacritics 2", detail = none
);
CREATE TRIGGER inbox_fts_insert AFTER INSERT ON inbox BEGIN
    INSERT INTO inbox_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER inbox_fts_delete AFTER DELETE ON inbox BEGIN
    INSERT INTO inbox_fts (inbox_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
-- A voice note's transcript arrives after the row: the text is updated then.
CREATE TRIGGER inbox_fts_update AFTER UPDATE OF text ON inbox BEGIN
    INSERT INTO inbox_fts (inbox_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO inbox_fts (rowid, text) VALUES (new.id, new.text);
END;
INSERT INTO inbox_fts (inbox_fts) VALUES ('rebuild');

CREATE VIRTUAL TABLE outbox_fts USING fts5 (
    text, content = 'outbox', content_rowid = 'id', tokenize = "unicode61 remove_diacritics 2", detail = none
);
CREATE TRIGGER outbox_fts_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER outbox_fts_delete AFTER DELETE ON outbox BEGIN
    INSERT INTO outbox_fts (outbox_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER outbox_fts_update AFTER UPDATE OF text ON outbox BEGIN
    INSERT INTO outbox_fts (outbox_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO outbox_fts (rowid, text) VALUES (new.id, new.text);
END;
INSERT INTO outbox_fts (outbox_fts) VALUES ('rebuild');

-- Outbound event webhooks: where to POST events, and a durable queue of deliveries (event × endpoint).
CREATE TABLE webhook_endpoints (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    -- The signing secret, encrypted with the server's secret key (it is needed in clear to sign).
    secret_enc TEXT NOT NULL,
    secret_hint TEXT NOT NULL,
    -- Comma-separated event kinds, e.g. "message.received,order.created".
    kinds TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    -- Only events after this one are delivered: a new endpoint is not flooded with history.
    from_event_id INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    created_by TEXT,
    updated_at REAL NOT NULL
);

CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id INTEGER NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    -- A worker holds a delivery until this time (compare-and-set claim): two never send it at once.
    claimed_until REAL NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    last_attempt_at REAL,
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, last_attempt_at);

-- How far the events table has been fanned out into deliveries (one row). Events from before this
-- migration are not delivered.
CREATE TABLE webhook_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id INTEGER NOT NULL
);
INSERT INTO webhook_cursor (id, last_event_id) VALUES (1, (SELECT COALESCE(MAX(id), 0) FROM events));
