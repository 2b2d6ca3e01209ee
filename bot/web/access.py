"""Who may use the operator web: password hashing, sessions, API tokens, sign-in throttling, client IPs.

This module holds the rules and the state; bot/web/auth.py applies them to requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from bot.configuration.config import Config, ConfigError
from bot.persistence.database import Database, Stmt
from bot.persistence.users import ROLES, UserExists, UserRepo

log = structlog.get_logger("bot.web.access")

SESSION_TTL_SECONDS = 12 * 3600
# A session's expiry slides forward on use, but writing that on every request would be wasteful.
SESSION_TOUCH_SECONDS = 300
MIN_PASSWORD = 10
ADMIN_USERNAME = "admin"
ENV_TOKEN_NAME = "BOT_API_TOKEN"

# scrypt cost: 2**15 × 8 × 128 bytes = 32 MiB and roughly 0.1 s per hash. Stored with each hash,
# so raising it later only affects new passwords.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
# What an unknown username's password is checked against: the same cost as a real check, so the
# response time does not tell which usernames exist. No password matches it.
_NO_USER_HASH = "$".join(("scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P),
                          base64.b64encode(secrets.token_bytes(16)).decode(),
                          base64.b64encode(secrets.token_bytes(32)).decode()))

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def sha256_hex(value: str) -> str:
    """The hex SHA-256 of a token: what the database stores instead of the token."""
    return hashlib.sha256(value.encode()).hexdigest()


def hash_password(password: str) -> str:
    """scrypt with a random per-user salt, as `scrypt$N$r$p$salt$hash` (blocking: run in a thread)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Check a password against a stored hash in constant time (blocking: run in a thread)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                maxmem=_SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, or None."""
    if len(password) < MIN_PASSWORD:
        return f"Use at least {MIN_PASSWORD} characters for the password."
    if len(password) > 1024:
        return "That password is too long (1024 characters at most)."
    return None


def username_problem(username: str) -> str | None:
    """Why a username is not acceptable, or None."""
    if not username or len(username) > 64:
        return "A username has 1 to 64 characters."
    if not all(ch.isalnum() or ch in "._-@" for ch in username):
        return "Use only letters, digits and . _ - @ in a username."
    return None


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """BOT_TRUSTED_PROXIES: IP addresses and CIDR ranges."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"BOT_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR range") from None
    return tuple(networks)


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """True when an address (IPv4, IPv6 or IPv4-mapped IPv6) is inside one of the networks."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def client_ip(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, or the nearest untrusted X-Forwarded-For hop behind trusted proxies."""
    peer = peer or "unknown"
    if not trusted or not in_networks(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    # Walk from the nearest hop outwards: each trusted proxy vouches for the one before it.
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain: trust nothing beyond our own proxy
        if not in_networks(hop, trusted):
            return hop
    return hops[0] if hops else peer


@dataclass(frozen=True, slots=True)
class Attempt:
    """One sign-in attempt, counted as a failure from the moment it is reserved until it succeeds."""

    id: int
    ip: str
    username: str
    at: float


# Counted and inserted in one statement: an attempt is refused if either count is already at its
# limit, else it is recorded, so attempts sent all at once (to any process) are all counted.
_RESERVE = (
    "INSERT INTO signin_attempts (ip, username, at) SELECT $1, $2, $3 "
    "WHERE (SELECT COUNT(*) FROM signin_attempts WHERE ip = $1 AND at > $4) < $5 "
    "AND (SELECT COUNT(*) FROM signin_attempts WHERE username = $2 AND at > $4) < $6 RETURNING id"
)
_RECENT = "SELECT at FROM signin_attempts WHERE {column} = $1 AND at > $2 ORDER BY at DESC LIMIT $3"


class LoginThrottle:
    """Failed sign-ins per IP and per username in a sliding window; past a limit, sign-ins wait.

    Kept in the database, so every server process sees every attempt. An attempt is counted *before*
    the password is checked (`reserve`), and only a correct password takes it back (`succeeded`).
    A success forgets the failures of that user from that IP, and nothing else: signing in to your
    own account does not buy more guesses at someone else's.
    """

    def __init__(self, db: Database, *, limit: int = 5, user_limit: int = 10, window_seconds: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.limit = limit
        self.user_limit = user_limit
        self.window = window_seconds
        self._clock = clock

    @staticmethod
    def user_key(username: str) -> str:
        """Usernames compare case-insensitively, as the users table does."""
        return username.strip().casefold()[:64]

    async def reserve(self, ip: str, username: str = "") -> Attempt | float:
        """Count an attempt as failed until `succeeded` says otherwise; or the seconds to wait first."""
        now = self._clock()
        user = self.user_key(username)
        since = now - self.window
        rows = (await self._db.write([
            Stmt("DELETE FROM signin_attempts WHERE at <= $1", (since,)),  # the table stays a minute long
            Stmt(_RESERVE, (ip, user, now, since, self.limit, self.user_limit), rows=True),
        ]))[1]
        if rows:
            return Attempt(int(rows[0][0]), ip, user, now)
        waits = [0.0]
        for column, key, limit in (("ip", ip, self.limit), ("username", user, self.user_limit)):
            recent = await self._db.fetch(_RECENT.format(column=column), key, since, limit)
            if len(recent) >= limit:
                waits.append(float(recent[-1][0]) + self.window - now)
        return max(1.0, *waits)

    async def succeeded(self, attempt: Attempt) -> None:
        """The password was right: forget this user's failures from this IP (only those)."""
        await self._db.execute("DELETE FROM signin_attempts WHERE ip = $1 AND username = $2",
                               attempt.ip, attempt.username)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request: a signed-in user (via="session") or an API token (via="token")."""

    username: str
    role: str
    via: str
    user_id: int | None = None
    session_hash: str | None = None
    csrf_token: str | None = None

    @property
    def name(self) -> str:
        """The name shown and recorded for this principal."""
        return self.username

    @property
    def is_admin(self) -> bool:
        """True for administrators."""
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class SignIn:
    """A new session: the cookie value (shown to the browser once) and who it belongs to."""

    token: str
    principal: Principal


class Access:
    """Users, sessions and tokens for the operator web (passwords are hashed off the event loop)."""

    def __init__(self, *, users: UserRepo, config: Config, throttle: LoginThrottle | None = None) -> None:
        self.users = users
        self.throttle = throttle or LoginThrottle(users.db)
        self.trusted_proxies = parse_networks(config.trusted_proxies)
        self._config = config
        self._env_token_hash = sha256_hex(config.api_token) if config.api_token else None

    async def ensure_admin(self) -> None:
        """First start: create `admin` with BOT_ADMIN_PASSWORD, or a generated password printed once."""
        if await self.users.count():
            return
        password = self._config.admin_password
        generated = not password
        if generated:
            password = secrets.token_urlsafe(15)
        try:
            await self.users.add(ADMIN_USERNAME, "admin", await asyncio.to_thread(hash_password, password))
        except UserExists:
            return  # another process created it first
        log.info("admin_user_created", username=ADMIN_USERNAME, password_generated=generated)
        if generated:
            # Straight to stderr, never through structlog: JSON logs are shipped and kept elsewhere.
            lines = [
                "First start: an administrator account was created.",
                f"  username: {ADMIN_USERNAME}",
                f"  password: {password}",
                "Sign in at /login and keep this password somewhere safe:",
                "it is shown only this once. (Set BOT_ADMIN_PASSWORD to choose it.)",
            ]
            width = max(len(line) for line in lines)
            box = ["+" + "-" * (width + 2) + "+", *[f"| {line.ljust(width)} |" for line in lines],
                   "+" + "-" * (width + 2) + "+"]
            print("\n" + "\n".join(box) + "\n", file=sys.stderr, flush=True)

    async def add_user(self, username: str, role: str, password: str) -> None:
        """Create a user; raises ValueError with a readable message when something is wrong."""
        problem = username_problem(username) or password_problem(password)
        if problem:
            raise ValueError(problem)
        if role not in ROLES:
            raise ValueError("The role is either admin or operator.")
        await self.users.add(username, role, await asyncio.to_thread(hash_password, password))

    async def sign_in(self, username: str, password: str, ip: str | None) -> SignIn | None:
        """Check a password and open a session; None when the name or password is wrong."""
        found = await self.users.credentials(username.strip())
        # An unknown name costs the same check as a known one, and fails the same way.
        stored = found[1] if found is not None else _NO_USER_HASH
        if not await asyncio.to_thread(verify_password, password, stored) or found is None:
            return None
        user = found[0]
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        token_hash = sha256_hex(token)
        await self.users.open_session(user.id, token_hash, csrf, ip, SESSION_TTL_SECONDS)
        principal = Principal(username=user.username, role=user.role, via="session", user_id=user.id,
                              session_hash=token_hash, csrf_token=csrf)
        return SignIn(token=token, principal=principal)

    async def from_session(self, token: str) -> tuple[Principal, bool] | None:
        """The signed-in user for a session cookie, and whether its expiry was just extended."""
        if not token or len(token) > 200:
            return None
        session = await self.users.session(sha256_hex(token))
        if session is None:
            return None
        extended = time.time() - session.last_seen_at > SESSION_TOUCH_SECONDS
        if extended:
            await self.users.extend_session(session.token_hash, SESSION_TTL_SECONDS)
        principal = Principal(username=session.user.username, role=session.user.role, via="session",
                              user_id=session.user.id, session_hash=session.token_hash,
                              csrf_token=session.csrf_token)
        return principal, extended

    async def from_token(self, token: str) -> Principal | None:
        """The principal for a bearer token: BOT_API_TOKEN (admin) or a token made on the settings page."""
        if not token or len(token) > 200:
            return None
        token_hash = sha256_hex(token)
        if self._env_token_hash is not None and hmac.compare_digest(token_hash, self._env_token_hash):
            return Principal(username=ENV_TOKEN_NAME, role="admin", via="token")
        found = await self.users.token(token_hash)
        if found is None:
            return None
        return Principal(username=f"token:{found.name}", role=found.role, via="token")

    async def sign_out(self, principal: Principal) -> None:
        """Close the principal's session."""
        if principal.session_hash:
            await self.users.close_session(principal.session_hash)

    async def create_token(self, name: str, role: str, created_by: str | None) -> str:
        """Make an API token; returns it (the only time it exists in clear)."""
        name = name.strip()
        if not name or len(name) > 64:
            raise ValueError("Give the token a name of 1 to 64 characters, e.g. what will use it.")
        if role not in ROLES:
            raise ValueError("The role is either admin or operator.")
        token = "bot_" + secrets.token_urlsafe(32)
        await self.users.add_token(name, role, sha256_hex(token), token[-4:], created_by)
        return token
