"""Persistence: one Database and a repository per table group."""

from __future__ import annotations

from dataclasses import dataclass

from bot.persistence.conversations import ConversationRepo
from bot.persistence.db import Database
from bot.persistence.inbox import ErrorRepo, InboxRepo
from bot.persistence.outbox import OutboxRepo


@dataclass(frozen=True, slots=True)
class Repositories:
    """Every repository, built on one Database."""

    db: Database
    conversations: ConversationRepo
    inbox: InboxRepo
    outbox: OutboxRepo
    errors: ErrorRepo

    @classmethod
    def on(cls, db: Database) -> Repositories:
        """Build them all on an open database."""
        return cls(
            db=db,
            conversations=ConversationRepo(db),
            inbox=InboxRepo(db),
            outbox=OutboxRepo(db),
            errors=ErrorRepo(db),
        )
