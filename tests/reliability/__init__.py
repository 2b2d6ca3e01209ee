"""Fault-injection suite: nothing lost, nothing sent twice, under duplicates, crashes and outages.

Run under pytest at a small scale (env `BOT_RELIABILITY_SCALE`, default 1), or standalone with a summary
table: `python -m tests.reliability --scale 4` (from the repository root, in the virtualenv).
"""
