"""Discovery (built-ins, BOT_TOOLS_PATH directories, entry points), broken modules, duplicates, failures."""

from __future__ import annotations

import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import orjson
import pytest

from bot.configuration.config import Config
from bot.persistence import Repositories
from bot.tools import ToolConfigError, ToolContext, discover, load_tools
from bot.web.keys import TOOLS
from tests.conftest import ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import text_message
from tests.fakes.openai_server import CallTools, FakeOpenAI, function_call_outputs
from tests.helpers import repos_of, wait_handled

BUILTINS = ["create_order", "generate_order_confirmation_form", "request_human", "search_products", "update_contact"]

GOOD = '''
from bot.tools import ToolContext, tool


@tool
async def shop_hours(ctx: ToolContext, day: str) -> dict[str, str]:
    """Opening hours of the shop.

    Args:
        day: a day of the week.
    """
    return {"day": day, "hours": "9-19"}


async def helper() -> None:
    """Not a tool: not decorated."""
'''

FAILING = '''
import asyncio

from bot.tools import ToolContext, tool


@tool(timeout=0.2)
async def slow_tool(ctx: ToolContext) -> str:
    """Never finishes in time."""
    await asyncio.sleep(30)
    return "late"


@tool
async def broken_tool(ctx: ToolContext, n: int) -> int:
    """Always fails."""
    return n // 0


@tool
async def odd_result(ctx: ToolContext) -> object:
    """Returns something that is not JSON."""
    return object()
'''


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def test_builtins_are_discovered_with_their_public_names() -> None:
    registry = discover(entry_points_=[])
    assert set(BUILTINS) <= set(registry.names())
    assert registry.load_errors == []


def test_tools_are_discovered_from_a_tools_path_directory(tmp_path: Path) -> None:
    write(tmp_path / "shop_tools", "hours.py", GOOD)
    write(tmp_path / "shop_tools", "_private.py", "raise RuntimeError('never imported')")
    registry = load_tools(Config(tools_path=(str(tmp_path / "shop_tools"),)), entry_points_=[])
    assert "shop_hours" in registry
    assert "helper" not in registry
    assert set(registry.names()) >= {*BUILTINS, "shop_hours"}
    spec = next(s for s in registry.specs() if s["name"] == "shop_hours")
    assert spec["parameters"]["properties"]["day"] == {"type": "string", "description": "a day of the week."}
    assert registry.load_errors == []


def test_broken_modules_are_reported_and_the_rest_still_loads(tmp_path: Path) -> None:
    folder = tmp_path / "tools"
    write(folder, "good.py", GOOD)
    syntax = write(folder, "syntax.py", "def broken(:\n    pass\n")
    missing = write(folder, "missing.py", "import no_such_module_for_bot_tests\n")
    exits = write(folder, "exits.py", "import sys\nsys.exit(3)\n")
    write(folder, "bad_schema.py", """
        from bot.tools import tool


        @tool
        async def free_form(data: dict[str, int]) -> None:
            '''Takes anything.'''
    """)
    registry = discover(tools_path=[str(folder), str(tmp_path / "nowhere")], entry_points_=[])
    assert "shop_hours" in registry and "free_form" not in registry
    errors = dict(registry.load_errors)
    assert errors[str(syntax)].startswith("SyntaxError") and "line 1" in errors[str(syntax)]
    assert "no_such_module_for_bot_tests" in errors[str(missing)]
    assert errors[str(exits)].startswith("SystemExit")
    assert "free-form dict" in errors[str(folder / "bad_schema.py")]
    assert "not a directory" in errors[str(tmp_path / "nowhere")]
    # load_errors are (module, error) pairs for the diagnostics page.
    module, error = registry.load_errors[0]
    assert isinstance(module, str) and isinstance(error, str)


def test_two_tools_with_one_name_stop_start_up_naming_both(tmp_path: Path) -> None:
    write(tmp_path / "a", "first.py", GOOD)
    write(tmp_path / "b", "second.py", GOOD)
    with pytest.raises(ToolConfigError) as caught:
        discover(tools_path=[str(tmp_path / "a"), str(tmp_path / "b")], builtins=False, entry_points_=[])
    message = str(caught.value)
    assert "shop_hours" in message and "first.py" in message and "second.py" in message


def test_a_tool_named_like_a_builtin_is_a_duplicate(tmp_path: Path) -> None:
    write(tmp_path / "t", "mine.py", """
        from bot.tools import tool


        @tool
        async def search_products(query: str) -> str:
            '''My own search.'''
            return query
    """)
    with pytest.raises(ToolConfigError, match=r"bot\.tools\.products"):
        discover(tools_path=[str(tmp_path / "t")], entry_points_=[])


def test_entry_points_give_modules_or_single_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "acme_bot_tools"
    write(package, "__init__.py", "")
    write(package, "hours.py", GOOD)
    write(package, "single.py", """
        from bot.tools import tool


        @tool
        async def one_tool() -> str:
            '''Just one.'''
            return "one"


        def not_a_tool() -> None:
            pass
    """)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    points = [
        EntryPoint("hours", "acme_bot_tools.hours", "bot.tools"),
        EntryPoint("one", "acme_bot_tools.single:one_tool", "bot.tools"),
        EntryPoint("plain", "acme_bot_tools.single:not_a_tool", "bot.tools"),
        EntryPoint("gone", "acme_bot_tools.gone", "bot.tools"),
    ]
    registry = discover(builtins=False, entry_points_=points)
    assert registry.names() == ["one_tool", "shop_hours"]
    errors = dict(registry.load_errors)
    assert "neither a module nor a function" in errors["entry point plain (acme_bot_tools.single:not_a_tool)"]
    assert "ModuleNotFoundError" in errors["entry point gone (acme_bot_tools.gone)"]


async def test_timeouts_and_exceptions_become_error_text_and_error_rows(
    tmp_path: Path, repos: Repositories, ctx: ToolContext
) -> None:
    write(tmp_path / "t", "failing.py", FAILING)
    registry = discover(tools_path=[str(tmp_path / "t")], builtins=False, entry_points_=[])
    slow = orjson.loads(await registry.call("slow_tool", "{}", ctx))
    assert "took too long" in slow["error"]
    broken = orjson.loads(await registry.call("broken_tool", '{"n": 4}', ctx))
    assert "broken_tool failed (ZeroDivisionError)" in broken["error"]
    odd = orjson.loads(await registry.call("odd_result", "{}", ctx))
    assert "odd_result failed (TypeError)" in odd["error"]
    rows = await repos.db.fetch("SELECT type, message, session_id FROM errors ORDER BY id")
    assert [r["type"] for r in rows] == ["tool_failed:slow_tool", "tool_failed:broken_tool", "tool_failed:odd_result"]
    assert "0.2 s" in rows[0]["message"]
    assert rows[1]["message"].startswith("ZeroDivisionError")
    assert {r["session_id"] for r in rows} == {"s_test"}


async def test_the_server_starts_with_a_broken_tool_module_and_the_model_sees_failures_as_text(
    tmp_path: Path, make_client: ClientFactory, fake_openai: FakeOpenAI, fake_graph: FakeGraph
) -> None:
    folder = tmp_path / "shop_tools"
    write(folder, "failing.py", FAILING)
    write(folder, "syntax.py", "def broken(:\n")
    client = await make_client(tools_path=(str(folder),))
    assert (await client.get("/healthz")).status == 200
    tools = client.app[TOOLS]
    assert [module for module, _ in tools.load_errors] == [str(folder / "syntax.py")]
    fake_openai.script.append(CallTools([("slow_tool", {}), ("broken_tool", {"n": 1})]))
    await post_webhook(client, text_message("wamid.T1", "393330000000", "Quando aprite domani?"))
    await wait_handled(client, 1)
    await fake_graph.wait_for_sent(1)
    first, second = fake_openai.responses_requests()
    assert {t["name"] for t in first["tools"]} >= {"slow_tool", "broken_tool", *BUILTINS}
    outputs = list(function_call_outputs(second).values())
    assert "took too long" in outputs[0] and "broken_tool failed" in outputs[1]
    types = [r["type"] for r in await repos_of(client).db.fetch("SELECT type FROM errors ORDER BY id")]
    assert sorted(types) == ["tool_failed:broken_tool", "tool_failed:slow_tool"]



def test_external_modules_may_use_their_own_typeddicts_with_postponed_annotations(tmp_path: Path) -> None:
    write(tmp_path / "t", "booking.py", '''
        from __future__ import annotations

        from typing_extensions import TypedDict

        from bot.tools import ToolContext, tool


        class Guest(TypedDict):
            """A guest."""

            name: str
            age: int | None


        @tool
        async def book_table(ctx: ToolContext, guests: list[Guest], when: str) -> str:
            """Book a table.

            Args:
                guests: who comes.
                when: date and time.
            """
            return f"{len(guests)} at {when}"
    ''')
    registry = discover(tools_path=[str(tmp_path / "t")], builtins=False, entry_points_=[])
    assert registry.load_errors == []
    params = registry.specs()[0]["parameters"]
    guest = params["$defs"]["Guest"]
    assert guest["required"] == ["name", "age"] and guest["additionalProperties"] is False
    assert guest["properties"]["age"]["type"] == ["integer", "null"]
