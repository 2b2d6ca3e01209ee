"""What every JSON route shares: answers, refusals with a clear message, reading a body, finding a conversation."""

from __future__ import annotations

from typing import Any, NoReturn

import orjson
from aiohttp import web

from bot.persistence.conversations import Conversation
from bot.web.keys import REPOS, USER

# Past the last row a page is empty anyway; beyond SQLite's 64-bit INTEGER the query would fail with a 500.
MAX_OFFSET = 10**9


def ok(data: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def refuse(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON refusal: `{"error": message, ...}`."""
    return ok({"error": message, **extra}, status)


_STATUSES: dict[int, type[web.HTTPException]] = {400: web.HTTPBadRequest, 404: web.HTTPNotFound,
                                                 409: web.HTTPConflict}


def stop(status: int, message: str, **extra: Any) -> NoReturn:
    """Refuse from anywhere inside a handler (400, 404 or 409), with the same JSON body as `refuse`."""
    raise _STATUSES[status](text=orjson.dumps({"error": message, **extra}).decode(), content_type="application/json")


async def json_object(request: web.Request, example: str) -> dict[str, Any]:
    """The body as a JSON object; 400 naming the expected shape otherwise."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        stop(400, f"send JSON like {example}")
    if not isinstance(body, dict):
        stop(400, f"send JSON like {example}")
    return body


def page_params(request: web.Request, *, default: int = 50, most: int = 200) -> tuple[int, int]:
    """?limit and ?offset, bounded; 400 when they are not whole numbers."""
    try:
        limit = max(1, min(most, int(request.query.get("limit", str(default)))))
        offset = max(0, min(MAX_OFFSET, int(request.query.get("offset", "0"))))
    except ValueError:
        stop(400, "limit and offset must be whole numbers")
    return limit, offset


async def find_conversation(request: web.Request, ident: str) -> Conversation | None:
    """A conversation by customer id, phone or session id (the most recent of them), or exactly by
    `<phone_number_id>:<customer_id>`: a customer who wrote to two business numbers has one on each."""
    repos = request.app[REPOS]
    business, colon, customer = ident.partition(":")
    if colon and business and customer:
        return await repos.conversations.get(business, customer)
    return await repos.conversations.find(ident)


async def conversation_of(request: web.Request) -> Conversation:
    """The conversation named by {wa_id} in the path (see `find_conversation`); 404 otherwise."""
    ident = request.match_info["wa_id"]
    conv = await find_conversation(request, ident)
    if conv is None:
        stop(404, f"no conversation with {ident[:100]!r}")
    return conv


def username(request: web.Request) -> str:
    """Who is calling, as recorded with what they do (a user, or `token:<name>` for an API token)."""
    user = request.get(USER)
    return user.username if user is not None else "api"
