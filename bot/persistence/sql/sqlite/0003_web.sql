-- Operator web: users, sign-in sessions, API tokens, the access/audit log,
-- the AI Assistant Settings row and the PDF knowledge base.

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator')),
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_login_at REAL
);

-- Only the sha256 of a session token is stored: a copy of the database cannot sign anyone in.
CREATE TABLE web_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    ip TEXT,
    created_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator')),
    token_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    created_by TEXT,
    created_at REAL NOT NULL,
    last_used_at REAL,
    revoked_at REAL
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT,
    ip TEXT,
    action TEXT NOT NULL,
    detail TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX audit_log_created ON audit_log (created_at);

-- One row (id = 1). NULL columns mean "not set on the page": the env value applies.
CREATE TABLE assistant_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    use_stored INTEGER NOT NULL DEFAULT 0,
    openai_api_key_enc TEXT,
    model TEXT,
    instructions TEXT,
    client_name TEXT,
    autoreply INTEGER,
    reaction INTEGER,
    reaction_emoji TEXT,
    human_cooldown_seconds INTEGER,
    burst_window_ms INTEGER,
    kb_enabled INTEGER NOT NULL DEFAULT 0,
    kb_mode TEXT NOT NULL DEFAULT 'openai' CHECK (kb_mode IN ('openai', 'local')),
    updated_at REAL,
    updated_by TEXT
);

-- One row (id = 1): the current PDF and where its index lives.
CREATE TABLE knowledge_base (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    filename TEXT NOT NULL,
    stored_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('processing', 'ready', 'failed')),
    error TEXT,
    openai_file_id TEXT,
    vector_store_id TEXT,
    uploaded_at REAL NOT NULL,
    indexed_at REAL
);

-- Local mode: the PDF's pages, searchable without OpenAI (accents ignored: "perche" finds "perché").
CREATE VIRTUAL TABLE kb_pages USING fts5 (text, page UNINDEXED, tokenize = 'unicode61 remove_diacritics 2');
