"""Operators and their access: users, sign-in sessions, API tokens, and the audit log."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.persistence.database import Database, Record, Stmt, marks, row_to

ROLES = ("admin", "operator")


@dataclass(frozen=True, slots=True)
class User:
    """A person who may sign in to the operator web."""

    id: int
    username: str
    role: str
    created_at: float
    last_login_at: float | None

    @classmethod
    def from_row(cls, row: Record) -> User:
        """Build from a users row."""
        return row_to(cls, row)


@dataclass(frozen=True, slots=True)
class WebSession:
    """A signed-in browser: its user and the CSRF token its forms must carry."""

    token_hash: str
    user: User
    csrf_token: str
    last_seen_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token for /api/* and /metrics (only its hash is stored; `hint` is its last characters)."""

    id: int
    name: str
    role: str
    hint: str
    created_by: str | None
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @classmethod
    def from_row(cls, row: Record) -> ApiToken:
        """Build from an api_tokens row."""
        return row_to(cls, row)


class UserExists(ValueError):
    """That username is taken."""


class UserRepo:
    """Users, their sessions and API tokens. Secrets arrive already hashed: this class never sees one."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # Users

    async def count(self) -> int:
        """How many users exist."""
        return int(await self.db.fetchval("SELECT COUNT(*) FROM users") or 0)

    async def add(self, username: str, role: str, password_hash: str) -> User:
        """Create a user; raises UserExists when the name is taken (case-insensitively)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        async with self.db.transaction() as tx:
            if await tx.fetchval("SELECT 1 FROM users WHERE lower(username) = lower($1)", username) is not None:
                raise UserExists(f"a user called {username!r} already exists")
            row = await tx.fetchrow(
                "INSERT INTO users (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING *",
                username, role, password_hash, time.time(),
            )
        assert row is not None
        return User.from_row(row)

    async def by_name(self, username: str) -> User | None:
        """A user by name (case-insensitive)."""
        row = await self.db.fetchrow("SELECT * FROM users WHERE lower(username) = lower($1)", username)
        return None if row is None else User.from_row(row)

    async def credentials(self, username: str) -> tuple[User, str] | None:
        """A user and the stored password hash, for signing in."""
        row = await self.db.fetchrow("SELECT * FROM users WHERE lower(username) = lower($1)", username)
        return None if row is None else (User.from_row(row), row["password_hash"])

    async def all(self) -> list[User]:
        """Every user, admins first."""
        rows = await self.db.fetch("SELECT * FROM users ORDER BY role, username")
        return [User.from_row(r) for r in rows]

    async def set_password(self, user_id: int, password_hash: str) -> None:
        """Replace a password and sign the user out everywhere."""
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE users SET password_hash = $1 WHERE id = $2", password_hash, user_id)
            await tx.execute("DELETE FROM web_sessions WHERE user_id = $1", user_id)

    async def set_role(self, user_id: int, role: str) -> bool:
        """Change a role; False when that would leave no admin."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        return bool(await self.db.execute(
            "UPDATE users SET role = $1 WHERE id = $2 AND NOT ($1 <> 'admin' AND role = 'admin' AND "
            "(SELECT COUNT(*) FROM users WHERE role = 'admin') <= 1)",
            role, user_id,
        ))

    async def delete(self, user_id: int) -> bool:
        """Remove a user (their sessions go with them); the last admin can never be removed."""
        return bool(await self.db.execute(
            "DELETE FROM users WHERE id = $1 AND NOT (role = 'admin' AND "
            "(SELECT COUNT(*) FROM users WHERE role = 'admin') <= 1)",
            user_id,
        ))

    # Sessions

    async def open_session(self, user_id: int, token_hash: str, csrf_token: str, ip: str | None,
                           ttl_seconds: float) -> None:
        """Store a new session and drop expired ones."""
        now = time.time()
        await self.db.write([
            Stmt("DELETE FROM web_sessions WHERE expires_at < $1", (now,)),
            Stmt("INSERT INTO web_sessions (token_hash, user_id, csrf_token, ip, created_at, last_seen_at, expires_at) "
                 "VALUES ($1, $2, $3, $4, $5, $5, $6)", (token_hash, user_id, csrf_token, ip, now, now + ttl_seconds)),
            Stmt("UPDATE users SET last_login_at = $1 WHERE id = $2", (now, user_id)),
        ])

    async def session(self, token_hash: str) -> WebSession | None:
        """A live (unexpired) session and its user."""
        row = await self.db.fetchrow(
            "SELECT s.token_hash, s.csrf_token, s.last_seen_at, s.expires_at, u.* FROM web_sessions s "
            "JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_at > $2",
            token_hash, time.time(),
        )
        if row is None:
            return None
        return WebSession(
            token_hash=row["token_hash"],
            user=User.from_row(row),
            csrf_token=row["csrf_token"],
            last_seen_at=row["last_seen_at"],
            expires_at=row["expires_at"],
        )

    async def extend_session(self, token_hash: str, ttl_seconds: float) -> None:
        """Slide the expiry forward after activity."""
        now = time.time()
        await self.db.execute(
            "UPDATE web_sessions SET last_seen_at = $1, expires_at = $2 WHERE token_hash = $3",
            now, now + ttl_seconds, token_hash,
        )

    async def close_session(self, token_hash: str) -> None:
        """Sign out."""
        await self.db.execute("DELETE FROM web_sessions WHERE token_hash = $1", token_hash)

    # API tokens

    async def add_token(self, name: str, role: str, token_hash: str, hint: str, created_by: str | None) -> int:
        """Store a new token's hash; returns its id."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        token_id = await self.db.insert(
            "INSERT INTO api_tokens (name, role, token_hash, hint, created_by, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            name, role, token_hash, hint, created_by, time.time(),
        )
        assert token_id is not None
        return int(token_id)

    async def token(self, token_hash: str) -> ApiToken | None:
        """A live (unrevoked) token by hash; records its use."""
        row = await self.db.fetchrow(
            "SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL", token_hash)
        if row is None:
            return None
        await self.db.execute("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2", time.time(), row["id"])
        return ApiToken.from_row(row)

    async def tokens(self) -> list[ApiToken]:
        """Every token, newest first (revoked ones too, for the record)."""
        rows = await self.db.fetch(
            "SELECT * FROM api_tokens ORDER BY CASE WHEN revoked_at IS NULL THEN 0 ELSE 1 END, id DESC")
        return [ApiToken.from_row(r) for r in rows]

    async def revoke_token(self, token_id: int) -> bool:
        """Revoke a token; False when there was no live token with that id."""
        return bool(await self.db.execute(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", time.time(), token_id
        ))


class AuditRepo:
    """Who did what from where: sign-ins, diagnostics views, settings changes, session resets."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, action: str, *, username: str | None, ip: str | None, detail: str | None = None) -> None:
        """Append one entry."""
        await self.db.execute(
            "INSERT INTO audit_log (username, ip, action, detail, created_at) VALUES ($1, $2, $3, $4, $5)",
            username, ip, action, detail[:500] if detail else None, time.time(),
        )

    async def recent(self, limit: int = 50, *, action: str | None = None) -> list[dict[str, object]]:
        """The newest entries, optionally of one action."""
        if action:
            rows = await self.db.fetch(
                "SELECT username, ip, action, detail, created_at FROM audit_log WHERE action = $1 "
                "ORDER BY id DESC LIMIT $2", action, limit)
        else:
            rows = await self.db.fetch(
                "SELECT username, ip, action, detail, created_at FROM audit_log ORDER BY id DESC LIMIT $1", limit)
        return [dict(r) for r in rows]

    async def accesses(self, actions: tuple[str, ...], window_seconds: float) -> list[dict[str, object]]:
        """Accesses within a window, grouped by user and IP, most recent first."""
        n = len(actions)
        rows = await self.db.fetch(
            f"SELECT username, ip, COUNT(*) AS count, MAX(created_at) AS last_at FROM audit_log "
            f"WHERE action IN ({marks(n)}) AND created_at >= ${n + 1} GROUP BY username, ip "
            f"ORDER BY last_at DESC LIMIT 50",
            *actions, time.time() - window_seconds,
        )
        return [dict(r) for r in rows]
