-- Limits and costs per customer and per month, and the WhatsApp message types that change earlier ones.

-- The customer's hourly window of turns (BOT_CUSTOMER_TURNS_PER_HOUR), kept with the actor's state.
ALTER TABLE conversations ADD COLUMN rate_window_start DOUBLE PRECISION;
ALTER TABLE conversations ADD COLUMN rate_window_turns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN flag_at DOUBLE PRECISION;

-- A message the customer deleted for everyone (WhatsApp "revoke").
ALTER TABLE inbox ADD COLUMN revoked_at DOUBLE PRECISION;

-- Every Responses API call's tokens, per conversation, model and UTC day (one row each, added to).
CREATE TABLE usage_ledger (
    day TEXT NOT NULL,
    phone_number_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    model TEXT NOT NULL,
    calls BIGINT NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (day, phone_number_id, customer_id, model)
);
CREATE INDEX usage_ledger_day ON usage_ledger (day);

-- Prices per million tokens, in the currency of BOT_MONTHLY_BUDGET; operators edit them on the settings page.
CREATE TABLE model_prices (
    model TEXT PRIMARY KEY,
    input_per_million DOUBLE PRECISION NOT NULL,
    cached_per_million DOUBLE PRECISION NOT NULL,
    output_per_million DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    updated_by TEXT
);

-- One row (id = 1), its own form on the settings page, in force whenever set (NULL: the env value):
-- the monthly budget, opening hours, and the template for texts the server sends outside the 24 h window.
CREATE TABLE business_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    monthly_budget DOUBLE PRECISION,
    opening_hours TEXT,
    time_zone TEXT,
    ai_outside_hours_only INTEGER NOT NULL DEFAULT 0,
    window_template TEXT,
    window_template_language TEXT,
    updated_at DOUBLE PRECISION,
    updated_by TEXT
);
