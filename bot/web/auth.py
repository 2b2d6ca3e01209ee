"""Sign-in and the default-deny middleware: every route needs a session or a bearer token unless it is public.

Public: /healthz, /login, /webhooks/whatsapp, /orders/confirm/{token} and /static/*. Everything else:
- HTML pages need a session (else a redirect to /login?next=...);
- /api/* take a session or a bearer token (else 401 JSON); /metrics takes a bearer token only;
- /settings, /settings/*, /api/settings, /api/templates/sync and /ai-diagnostics/reset-sessions are for admins
  (403 for operators);
- a POST/PUT/PATCH/DELETE made with a session carries its CSRF token (form field or X-CSRF-Token).
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from bot.ai.privacy import mask_phone
from bot.texts import plural
from bot.web.access import SESSION_TTL_SECONDS, Access, Attempt, Principal, client_ip, in_networks
from bot.web.keys import ACCESS, REPOS, USER
from bot.web.pages import render

log = structlog.get_logger("bot.web.auth")

routes = web.RouteTableDef()

SESSION_COOKIE = "bot_session"
LOGIN_CSRF_COOKIE = "bot_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
HOME = "/inbox"  # where a sign-in lands when it was not heading anywhere
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PUBLIC_PATHS = frozenset({"/healthz", "/login", "/webhooks/whatsapp"})
_ORDER_CONFIRM = re.compile(r"^/orders/confirm/\{[^/{}]+\}$")
# Paths (and everything under them) only admins may use, with what the refusal says they tried.
_ADMIN_ONLY = {
    "/settings": "open the settings",
    "/api/settings": "open the settings",
    "/ai-diagnostics/reset-sessions": "reset the sessions",
    "/api/templates/sync": "sync the templates",
}
_STREAM_CSRF = "__csrf_checked_by_handler__"
_LONG_NUMBER = re.compile(r"\d{7,}")

AnyHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def checks_csrf_itself(handler: AnyHandler) -> AnyHandler:
    """Mark a multipart handler that reads the CSRF field from the stream itself (large uploads).

    The middleware cannot read such a body first without buffering all of it; the handler must call
    `csrf_ok()` on the first form field before it reads anything else.
    """
    setattr(handler, _STREAM_CSRF, True)
    return handler


def streams_body(handler: object) -> bool:
    """True for a handler marked with `checks_csrf_itself`: it reads its (large) body as a stream."""
    return bool(getattr(handler, _STREAM_CSRF, False))


def request_ip(request: web.Request) -> str:
    """The client's IP (X-Forwarded-For only from a trusted proxy)."""
    return client_ip(request.remote, request.headers.getall("X-Forwarded-For", []),
                     request.app[ACCESS].trusted_proxies)


def is_https(request: web.Request) -> bool:
    """True for HTTPS, directly or as reported by a trusted proxy's X-Forwarded-Proto."""
    if request.secure:
        return True
    trusted = request.app[ACCESS].trusted_proxies
    if trusted and in_networks(request.remote or "", trusted):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return proto == "https"
    return False


def csrf_ok(principal: Principal | None, submitted: str | None) -> bool:
    """Compare a submitted CSRF token with the session's, in constant time."""
    if principal is None or principal.via != "session" or not principal.csrf_token or not submitted:
        return False
    return hmac.compare_digest(submitted.encode(), principal.csrf_token.encode())


def safe_next(target: str | None) -> str:
    """A local path to go to after signing in (anything else would be an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return HOME
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in target) or target.startswith("/login") or target == "/":
        return HOME
    return target


def _is_public(request: web.Request) -> bool:
    info = request.match_info
    if info.http_exception is not None:
        return False
    resource = info.route.resource
    if resource is None:
        return False
    canonical = resource.canonical
    if isinstance(resource, web.StaticResource):
        return canonical == "/static"
    if canonical in _PUBLIC_PATHS:
        return True
    return bool(_ORDER_CONFIRM.match(canonical)) and request.method in ("GET", "HEAD", "POST")


def _loggable(path: str) -> str:
    """A path for the log: a customer's number in it (/api/conversations/{wa_id}/...) is masked."""
    return _LONG_NUMBER.sub(lambda m: mask_phone(m.group()), path)


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/api"


def _json_error(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="bot"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


def _refuse(request: web.Request, status: int, message: str) -> web.Response:
    if _is_api(request.path) or request.path == "/metrics":
        return _json_error(status, message)
    return render(request, "error.html", status=status, title="Not allowed", message=message)


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    """HttpOnly, SameSite=Lax, Secure on HTTPS; lives as long as the server-side session."""
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL_SECONDS, path="/", httponly=True,
                        samesite="Lax", secure=is_https(request))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Default deny: decide who is calling, refuse what they may not do, then run the handler."""
    if _is_public(request):
        return await handler(request)
    access = request.app[ACCESS]
    path = request.path
    api = _is_api(path)
    principal: Principal | None = None
    extended = False
    token = ""
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer " and (api or path == "/metrics"):
        principal = await access.from_token(authorization[7:].strip())
        if principal is None:
            log.warning("api_token_refused", path=_loggable(path), ip=request_ip(request))
            return _json_error(401, "invalid or revoked API token")
    elif path == "/metrics":
        return _json_error(401, "send an API token: Authorization: Bearer <token>")
    else:
        token = request.cookies.get(SESSION_COOKIE, "")
        found = await access.from_session(token) if token else None
        if found is not None:
            principal, extended = found
    if principal is None:
        if api:
            return _json_error(401, "sign in, or send an API token: Authorization: Bearer <token>")
        if request.method in ("GET", "HEAD"):
            target = HOME if request.path == "/" else request.path_qs
            raise web.HTTPFound(f"/login?next={quote(target, safe='/')}")
        return _refuse(request, 401, "Your session has ended. Sign in again, then repeat what you were doing.")
    request[USER] = principal
    if principal.via == "session" and request.method not in _SAFE_METHODS:
        refused = await _check_csrf(request, handler, principal)
        if refused is not None:
            return refused
    admin_only = _admin_only(path)
    if admin_only is not None and not principal.is_admin:
        return _refuse(request, 403, f"Only an administrator can {admin_only}. Ask the shop's admin.")
    response = await handler(request)
    if extended and not response.prepared:
        set_session_cookie(request, response, token)
    return response


def _admin_only(path: str) -> str | None:
    """What an admin-only path does (for the refusal), or None when any signed-in user may use it."""
    for prefix, what in _ADMIN_ONLY.items():
        if path == prefix or path.startswith(prefix + "/"):
            return what
    return None


async def _check_csrf(request: web.Request, handler: Handler, principal: Principal) -> web.Response | None:
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None:
        if request.content_type == "multipart/form-data" and streams_body(request.match_info.handler):
            return None  # the handler checks the first field before reading the upload
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            value = form.get(CSRF_FIELD)
            submitted = value if isinstance(value, str) else None
    if csrf_ok(principal, submitted):
        return None
    log.warning("csrf_refused", path=_loggable(request.path), user=principal.username, ip=request_ip(request))
    return _refuse(request, 403, "This form has expired or did not come from this site. Reload the page and "
                                 "try again.")


# Sign-in pages


def _login_csrf(request: web.Request) -> str:
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def _login_page(request: web.Request, *, status: int = 200, error: str | None = None, username: str = "",
                headers: dict[str, str] | None = None) -> web.Response:
    csrf = _login_csrf(request)
    response = render(request, "login.html", status=status, headers=headers, error=error, username=username,
                      next=safe_next(request.query.get("next")), login_csrf=csrf)
    # Double-submit token: before signing in there is no session to hold one.
    response.set_cookie(LOGIN_CSRF_COOKIE, csrf, path="/login", httponly=True, samesite="Strict",
                        secure=is_https(request))
    return response


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    """The address the server prints: signed-in users start in the inbox (others were sent to sign in)."""
    raise web.HTTPFound(HOME)


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    """The sign-in page."""
    return _login_page(request)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    """Check the password (throttled per IP and per username), open a session and go where the user was heading."""
    access: Access = request.app[ACCESS]
    ip = request_ip(request)
    form = await request.post()
    username = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))
    submitted = str(form.get(CSRF_FIELD, ""))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(submitted.encode(), cookie.encode()):
        return _login_page(request, status=403, username=username,
                           error="The sign-in form expired. Please try again.")
    # Counted as failed before the (slow) password check: attempts sent all at once, to this process
    # or another, are all counted, and the ones past the limit wait.
    attempt = await access.throttle.reserve(ip, username)
    if not isinstance(attempt, Attempt):
        seconds = math.ceil(attempt)
        log.warning("sign_in_throttled", ip=ip, wait=seconds)
        return _login_page(request, status=429, username=username, headers={"Retry-After": str(seconds)},
                           error=f"Too many attempts. Wait {plural(seconds, 'second')}, then try again.")
    signed = await access.sign_in(username, password, ip)
    repos = request.app[REPOS]
    if signed is None:
        await repos.audit.record("sign_in_failed", username=username or None, ip=ip)
        log.info("sign_in_failed", ip=ip)
        return _login_page(request, status=401, username=username,
                           error="Wrong username or password. Check them and try again.")
    await access.throttle.succeeded(attempt)
    await repos.audit.record("sign_in", username=signed.principal.username, ip=ip)
    log.info("signed_in", user=signed.principal.username, ip=ip)
    target = safe_next(str(form.get("next", "")))
    response = web.HTTPSeeOther(target)
    set_session_cookie(request, response, signed.token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    """Close the session and go back to the sign-in page."""
    principal = request[USER]
    await request.app[ACCESS].sign_out(principal)
    await request.app[REPOS].audit.record("sign_out", username=principal.username, ip=request_ip(request))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def principal_of(request: web.Request) -> Principal:
    """The caller (the middleware has already refused anyone else)."""
    return request[USER]


def audit_fields(request: web.Request) -> dict[str, Any]:
    """username and ip for an audit entry about this request."""
    return {"username": request[USER].username, "ip": request_ip(request)}
