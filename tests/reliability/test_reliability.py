"""Nothing lost, nothing sent twice: the fault-injection scenarios at pytest scale, and precise storage faults.

`BOT_RELIABILITY_SCALE` (default 1) sizes the scenarios; `python -m tests.reliability --scale 4` runs them
standalone with 20+ SIGKILL trials and a real one-minute model outage, and prints the summary table.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bot.configuration.config import Config
from tests.conftest import ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import load_sample, text_message
from tests.fakes.openai_server import Fail, FakeOpenAI
from tests.helpers import repos_of, wait_conversation, wait_until
from tests.reliability.harness import UNSETTLED_SQL, StatementFaults
from tests.reliability.scenarios import SCENARIOS, OutagePolicy

SCALE = int(os.environ.get("BOT_RELIABILITY_SCALE", "1"))
PHONE = "393471112222"


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario(name: str, tmp_path: Path) -> None:
    results = await SCENARIOS[name](SCALE, tmp_path)
    failures = [r.explain() for r in results if not r.passed and not r.known_limit]
    assert not failures, "\n".join(failures)
    no_longer = [r.name for r in results if r.passed and r.known_limit]
    assert not no_longer, f"the known limit is gone in {no_longer}: update the scenario and README's table"
    limits = [r for r in results if r.known_limit]
    if limits:
        pytest.xfail("; ".join(f"{r.name}: {r.known_limit} ({r.explain()})" for r in limits))


def test_default_retry_policy_rides_out_a_one_minute_model_outage() -> None:
    defaults = Config()
    policy = OutagePolicy("defaults", defaults.retry_base_seconds, defaults.retry_max_seconds, defaults.max_attempts,
                          defaults.retry_budget_seconds)
    assert policy.ride_out() >= 60
    # Without the time budget, five quick tries would be over in about half a minute.
    assert OutagePolicy("no budget", defaults.retry_base_seconds, defaults.retry_max_seconds,
                        defaults.max_attempts).ride_out() < 60


# -- precise storage faults: one statement of the app's own connection fails, as on a full disk ------------------
async def settled(client: TestClient) -> None:
    """Wait until no customer message is pending and no reply is queued or being sent."""
    db = repos_of(client).db

    async def idle() -> bool:
        return int(await db.fetchval(UNSETTLED_SQL) or 0) == 0

    await wait_until(idle, timeout=10, what="no pending work")


async def faulty(make_client: ClientFactory, **overrides: object) -> tuple[TestClient, StatementFaults]:
    """The app with a statement-fault injector on its database connection."""
    client = await make_client(**overrides)
    faults = StatementFaults()
    await faults.install(repos_of(client))
    return client, faults


@pytest.mark.parametrize("statement", ["UPDATE outbox SET status = 'sent'",
                                       "UPDATE conversations SET last_outbound_at"])
async def test_storage_failure_after_meta_accepted_never_answers_again(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph, statement: str
) -> None:
    # Meta accepted the reply, then the database refused to record it (or the activity after it). While
    # the turn backs off, the customer writes again: the retry answers only the new message.
    client, faults = await faulty(make_client, retry_base_seconds=0.3, retry_max_seconds=0.3)
    faults.fail(statement)
    await post_webhook(client, text_message("wamid.R1", PHONE, "first question"))
    await fake_graph.wait_for_sent(1)
    await post_webhook(client, text_message("wamid.R2", PHONE, "second question"))
    await fake_graph.wait_for_sent(2)
    await settled(client)
    assert faults.failed
    assert fake_graph.texts() == ["Echo: first question", "Echo: second question"]
    # No second draft for the first question either: the chain holds only what the customer saw.
    assert [r["input"][0]["content"] for r in fake_openai.responses_requests()] == ["first question",
                                                                                    "second question"]
    statuses = await repos_of(client).db.fetch("SELECT status FROM outbox ORDER BY id")
    assert [r["status"] for r in statuses] == ["sent", "sent"]


async def test_failure_bookkeeping_failing_does_not_strand_the_message(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    # The model refuses (a final error) and the database refuses to record that: the message must still
    # be dealt with (answered on a later try, or failed with the fallback), never left pending forever.
    client, faults = await faulty(make_client)
    faults.fail("INSERT INTO errors")
    fake_openai.script.append(Fail(400, message="Scripted refusal"))
    await post_webhook(client, text_message("wamid.S1", PHONE, "are you open today"))
    await fake_graph.wait_for_sent(1)
    await settled(client)
    assert faults.failed
    status = await repos_of(client).db.fetchval("SELECT status FROM inbox WHERE wamid = 'wamid.S1'")
    assert status in ("done", "failed")
    assert len(fake_graph.texts()) == 1


async def test_storage_failure_at_turn_start_is_retried(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    # The model answered, then the turn's write failed twice: the write is retried, not the question.
    client, faults = await faulty(make_client)
    faults.fail("UPDATE inbox SET status", times=2)
    await post_webhook(client, text_message("wamid.T1", PHONE, "hello, anyone there"))
    await fake_graph.wait_for_sent(1)
    await settled(client)
    assert len(faults.failed) == 2
    assert fake_graph.texts() == ["Echo: hello, anyone there"]
    assert len(fake_openai.responses_requests()) == 1


async def test_commit_failure_then_success_answers_once(
    make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    client, faults = await faulty(make_client)
    faults.fail("INSERT INTO outbox")  # the reply's commit: rolled back whole
    await post_webhook(client, text_message("wamid.C1", PHONE, "do you deliver"))
    await fake_graph.wait_for_sent(1)
    await settled(client)
    assert faults.failed
    assert fake_graph.texts() == ["Echo: do you deliver"]
    assert await repos_of(client).db.fetchval("SELECT status FROM inbox") == "done"


async def test_echo_redelivered_after_a_storage_failure_still_pauses(
    client: TestClient, fake_openai: FakeOpenAI
) -> None:
    # Storing the echo failed, so Meta got a 503 and redelivers: the redelivery must pause. Then the
    # actor's own write of the pause fails once: it is retried, and the AI is paused in the end.
    faults = StatementFaults()
    await faults.install(repos_of(client))
    faults.fail("INSERT INTO commands")
    faults.fail("UPDATE conversations SET last_response_id")
    body = load_sample("smb_echo_text")
    assert (await post_webhook(client, body)).status == 503
    assert (await post_webhook(client, body)).status == 200
    await wait_conversation(client, lambda c: c.paused, "the pause")
    assert len(faults.failed) == 2


async def test_webhook_storage_failure_is_a_503_and_the_retry_is_answered_once(
    client: TestClient, fake_graph: FakeGraph
) -> None:
    faults = StatementFaults()
    await faults.install(repos_of(client))
    faults.fail("INSERT INTO inbox")
    payload = text_message("wamid.W1", PHONE, "a question for you")
    assert (await post_webhook(client, payload)).status == 503
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM inbox") == 0
    assert (await post_webhook(client, payload)).status == 200
    assert (await post_webhook(client, payload)).status == 200
    await fake_graph.wait_for_sent(1)
    await settled(client)
    await asyncio.sleep(0.1)
    assert fake_graph.texts() == ["Echo: a question for you"]
