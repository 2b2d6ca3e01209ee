-- PostgreSQL's 0012 drops inbox_pending (status, id), which its cached plans misused; SQLite plans each
-- statement afresh and uses it well (the start-up replay, the pending count), so it stays here.
-- The file keeps both dialects' migration numbers in step.
SELECT 1;
