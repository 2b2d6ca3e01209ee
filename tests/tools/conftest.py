"""Fixtures for the tool tests: a real CRM database (SQLite under tmp_path, or PostgreSQL), and a ToolContext on it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import pytest

from bot.commands.import_products import parse_catalogue
from bot.configuration.config import Config
from bot.persistence import Repositories
from bot.persistence.crm import Contact
from bot.persistence.database import Database
from bot.tools import ToolContext
from tests.backend import database_url_for

BUSINESS = "100000000000001"
CUSTOMER = "393330000000"


def sample_csv() -> str:
    """The sample catalogue shipped with the package."""
    return (resources.files("bot") / "samples" / "sample_products.csv").read_text(encoding="utf-8")


async def load_sample_catalogue(repos: Repositories) -> None:
    """Import the sample catalogue (15 Italian products) into the database."""
    report = parse_catalogue(sample_csv())
    assert not report.rejected
    await repos.products.upsert_many(report.products)


@pytest.fixture
async def repos(tmp_path: Path) -> AsyncIterator[Repositories]:
    """Every repository on a fresh database, closed after the test."""
    db = Database.create(database_url_for(tmp_path / "data"))
    await db.open()
    try:
        yield Repositories.on(db)
    finally:
        await db.close()


@pytest.fixture
async def contact(repos: Repositories) -> Contact:
    """A contact as the first AI turn creates it."""
    await repos.conversations.ensure(BUSINESS, CUSTOMER, wa_id=CUSTOMER, profile_name="Giulia")
    return await repos.contacts.ensure(BUSINESS, CUSTOMER, wa_id=CUSTOMER, profile_name="Giulia", language="it")


def make_context(repos: Repositories, contact: Contact, *, config: Config | None = None,
                 language: str | None = "it") -> ToolContext:
    """A ToolContext as the app builds it for one turn."""
    return ToolContext(
        contact=contact,
        session_id="s_test",
        language=language,
        repos=repos,
        clock=time.time,
        conversation_key=(contact.phone_number_id, contact.customer_id),
        config=config or Config(public_url="https://shop.example"),
    )


@pytest.fixture
def ctx(repos: Repositories, contact: Contact) -> ToolContext:
    """The context of a turn of the test contact."""
    return make_context(repos, contact)
