-- A conversation's pending messages (read by every turn in cluster mode, and by a Wake): found through
-- a small index of pending rows only. Without it the planner, with statistics that lag a table growing
-- by thousands of rows a second, took inbox_pending (status, id) and walked every pending row of every
-- conversation for each turn; that query was most of PostgreSQL's time in the sustained benchmark.
CREATE INDEX inbox_pending_conversation ON inbox (phone_number_id, customer_id, id) WHERE status = 'pending';
