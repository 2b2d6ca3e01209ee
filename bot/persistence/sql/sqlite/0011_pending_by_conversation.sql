-- PostgreSQL's 0011 adds a partial index for a conversation's pending messages; SQLite's planner already
-- takes inbox_conversation (phone_number_id, customer_id, id) for that query, so nothing changes here.
-- The file keeps both dialects' migration numbers in step.
SELECT 1;
