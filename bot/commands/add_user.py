"""Add an operator-web user (or change one's password): add-user NAME [--role admin|operator] [--password-stdin]."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import warnings

from bot.configuration.config import Config
from bot.persistence.database import Database
from bot.persistence.users import ROLES, UserExists, UserRepo
from bot.web.access import hash_password, password_problem, username_problem


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py add-user",
        description="Add a user who can sign in to the operator pages (/settings is for admins only).",
    )
    parser.add_argument("username")
    parser.add_argument("--role", choices=ROLES, help="operator (default for a new user) or admin")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (for scripts)")
    parser.add_argument("--update", action="store_true",
                        help="the user exists: set this password instead (signs them out everywhere)")
    return parser


NO_TERMINAL = (
    "add-user: there is no terminal to type the password in (or the input ended), so nothing was changed.\n"
    "From a script, pass the password on standard input:\n"
    "  printf '%s\\n' \"$PASSWORD\" | .venv/bin/python run.py add-user NAME --password-stdin"
)
EMPTY_STDIN = "add-user: --password-stdin found no password: it reads the first line of standard input."


class NoTerminal(Exception):
    """There is nobody to ask for the password."""


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        with warnings.catch_warnings():
            # Without a terminal getpass falls back to reading stdin and would show the password as it is
            # typed: refuse instead.
            warnings.simplefilter("error", getpass.GetPassWarning)
            first = getpass.getpass("Password: ")
            second = getpass.getpass("Password again: ")
    except (EOFError, getpass.GetPassWarning):
        raise NoTerminal from None
    if first != second:
        print("The two passwords differ; nothing was changed.", file=sys.stderr)
        return None
    return first


async def run(config: Config, argv: list[str]) -> int:
    """Add a user with a role and a password (prompted, or read from stdin)."""
    args = _parser().parse_args(argv)
    username = args.username.strip()
    problem = username_problem(username)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        password = await asyncio.to_thread(_read_password, args.password_stdin)
    except NoTerminal:
        print(NO_TERMINAL, file=sys.stderr)
        return 2
    if password is None:
        return 1
    if args.password_stdin and not password:
        print(EMPTY_STDIN, file=sys.stderr)
        return 2
    problem = password_problem(password)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    hashed = await asyncio.to_thread(hash_password, password)
    db = Database.create(config.database_url)
    await db.open()
    try:
        users = UserRepo(db)
        try:
            await users.add(username, args.role or "operator", hashed)
        except UserExists:
            if not args.update:
                print(f"There is already a user called {username}. Use --update to set a new password.",
                      file=sys.stderr)
                return 1
            existing = await users.by_name(username)
            assert existing is not None
            await users.set_password(existing.id, hashed)
            role = existing.role
            if args.role and existing.role != args.role:
                if await users.set_role(existing.id, args.role):
                    role = args.role
                else:
                    print("The role stays admin: there must always be one admin.", file=sys.stderr)
            print(f"Password of {existing.username} changed (role: {role}).")
            return 0
    finally:
        await db.close()
    print(f"User {username} added with role {args.role or 'operator'}. They sign in at /login.")
    return 0
