"""Several server processes on one PostgreSQL database: who runs which conversation, and how they talk.

Exclusivity and work distribution come from PostgreSQL itself, not from consensus of our own:
- **Ownership** (ownership.py): a process runs a conversation's actor only while it holds that
  conversation's session-level advisory lock, on one connection of its own. Locks are taken on
  demand, in batches, and released when the actor passivates. When a process dies, PostgreSQL ends
  its session and every lock it held is free at once.
- **The bus** (bus.py): LISTEN/NOTIFY. A process that stored work for a conversation another one
  owns tells it so ("wake"); live inbox events travel the same way, batched.
- **The sweeper** (registry.py): every second, work nobody has picked up (pending inbox rows,
  commands, queued or interrupted sends) is claimed by whoever can take its lock: a dead process's
  conversations are taken over within seconds, and a lost notification costs a second, not a message.
- **The send rate** (rate.py): one token bucket per business number in a table, shared by all.
Everything durable (inbox, outbox, commands) is already in the database: a notification is only a
hint to look, so losing one never loses work.
"""
