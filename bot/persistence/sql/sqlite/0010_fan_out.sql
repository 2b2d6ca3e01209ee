-- Deliveries are queued in the unit that records their event (bot/persistence/events.py), so the
-- cursor that fanned events out afterwards is gone: on PostgreSQL ids commit out of order, and a
-- cursor could step past an event still being committed.
DROP TABLE webhook_cursor;
