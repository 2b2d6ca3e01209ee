-- The conversation actor owns its conversation: a durable mailbox for operators' commands, outbox
-- bodies for interactive and template messages, and flags and assignment for the inbox.

-- Commands for a conversation's actor (pause, resume, an echo from the Business app …), written by
-- whoever receives them and consumed, in order, by the actor, in the same unit as their effect.
CREATE TABLE commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_number_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX commands_conversation ON commands (phone_number_id, customer_id, id);

ALTER TABLE outbox ADD COLUMN body TEXT;
ALTER TABLE conversations ADD COLUMN flag TEXT;
ALTER TABLE conversations ADD COLUMN assigned_to TEXT;
