"""The support desk: what a team needs around the inbox, one module per feature.

- conversations: tabs' counts, assignment, read markers, labels, notes, the contact panel;
- canned: canned replies (kept on the settings page, inserted with `/` in the reply box);
- templates: the WABA's templates, sending one after the 24-hour window, syncing them;
- orders: the /orders page, confirming or cancelling as an operator;
- export: a conversation, or a date range, as CSV or JSON (streamed);
- hooks: the outbound event webhooks on the settings page.
"""

from __future__ import annotations

from aiohttp import web

from bot.web.desk import canned, conversations, export, hooks, orders, templates

# One table for the app to add, as every other module of bot/web has.
routes: list[web.AbstractRouteDef] = [*conversations.routes, *canned.routes, *templates.routes, *orders.routes,
                                      *export.routes, *hooks.routes]
