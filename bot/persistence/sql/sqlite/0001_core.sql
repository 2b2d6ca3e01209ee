CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    phone_number_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    wa_id TEXT,
    user_id TEXT,
    profile_name TEXT,
    session_id TEXT NOT NULL UNIQUE,
    last_response_id TEXT,
    last_response_at REAL,
    language TEXT,
    paused INTEGER NOT NULL DEFAULT 0,
    paused_until REAL,
    paused_since REAL,
    needs_human INTEGER NOT NULL DEFAULT 0,
    is_test INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'active',
    last_inbound_at REAL,
    last_outbound_at REAL,
    last_message_preview TEXT,
    last_activity_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (phone_number_id, customer_id)
);
CREATE INDEX conversations_activity ON conversations (needs_human DESC, last_activity_at DESC);
CREATE INDEX conversations_wa_id ON conversations (wa_id);

CREATE TABLE inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wamid TEXT NOT NULL UNIQUE,
    phone_number_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    wa_id TEXT,
    user_id TEXT,
    profile_name TEXT,
    type TEXT NOT NULL,
    text TEXT,
    payload TEXT NOT NULL,
    sent_at INTEGER,
    received_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    handled_at REAL
);
CREATE INDEX inbox_pending ON inbox (status, id);
CREATE INDEX inbox_conversation ON inbox (phone_number_id, customer_id, id);
CREATE INDEX inbox_received ON inbox (received_at);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_number_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    author TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'text',
    text TEXT NOT NULL,
    reply_to_inbox_id INTEGER,
    part INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'queued',
    wamid TEXT UNIQUE,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_code INTEGER,
    error_reason TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (reply_to_inbox_id, author, part)
);
CREATE INDEX outbox_status ON outbox (status, id);
CREATE INDEX outbox_conversation ON outbox (phone_number_id, customer_id, id);
CREATE INDEX outbox_created ON outbox (created_at);

CREATE TABLE orphan_statuses (
    wamid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    error_code INTEGER,
    error_reason TEXT,
    received_at REAL NOT NULL
);

CREATE TABLE errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    session_id TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX errors_created ON errors (created_at);
