-- inbox_pending (status, id) goes: with it, a conversation's pending messages could be found by walking
-- every pending row in id order, and PostgreSQL's cached plans (made once per connection, while the
-- table was still small, and kept until statistics change) took that walk for every turn: 4.6 ms and
-- 700 buffers a call in the sustained benchmark, most of PostgreSQL's time. Every query on pending
-- rows now has the partial index of 0011 (pending rows only, by conversation) or the primary key.
DROP INDEX IF EXISTS inbox_pending;
