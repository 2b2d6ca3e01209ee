-- Events for other systems (a CRM, n8n): written in the same unit of work as what they report, so an
-- event exists exactly when its cause was committed; delivered to the configured endpoints from here.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    token TEXT  -- finds the event again in its own unit, to queue its deliveries
);
CREATE INDEX events_created ON events (created_at);
CREATE UNIQUE INDEX events_token ON events (token);
