"""The @tool decorator and the strict JSON schema built from real signatures and docstrings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
import pydantic
import pytest
from typing_extensions import TypedDict

from bot.tools import Tool, ToolConfigError, ToolContext, ToolRegistry, tool
from bot.tools.schema import parse_docstring

# Nothing here opens a database: the PostgreSQL half of the suite leaves these to the SQLite half.
pytestmark = pytest.mark.no_database


class Line(TypedDict):
    """One line."""

    sku: str
    quantity: Annotated[int, pydantic.Field(ge=1, le=1000, description="how many")]


class Address(pydantic.BaseModel):
    """Where to deliver."""

    street: str
    city: str
    floor: int | None = None


@tool
async def place(
    ctx: ToolContext,
    items: list[Line],
    address: Address | None = None,
    notes: str | None = None,
    speed: Literal["normal", "express"] = "normal",
) -> dict[str, Any]:
    """Place an order for delivery.

    The second paragraph is kept too.

    Args:
        items: what to deliver,
            one entry per product.
        address: where to; null to collect in the shop.
        notes: anything else.
        speed: how fast.

    Returns:
        The order.
    """
    return {"items": items, "address": address, "notes": notes, "speed": speed}


@tool(name="ping-2", timeout=3, description="Answer pong.")
async def ping() -> str:
    return "pong"


def all_objects(node: Any) -> list[dict[str, Any]]:
    """Every object schema anywhere in a schema (for checking strictness everywhere)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found.extend(all_objects(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(all_objects(value))
    return found


def test_spec_from_a_real_signature_is_strict_everywhere() -> None:
    spec = Tool.from_function(place, default_timeout=20).spec()
    assert spec["type"] == "function"
    assert spec["name"] == "place"
    assert spec["strict"] is True
    assert spec["description"] == "Place an order for delivery.\n\nThe second paragraph is kept too."
    params = spec["parameters"]
    assert params["type"] == "object"
    assert list(params["properties"]) == ["items", "address", "notes", "speed"]  # ctx is injected, not shown
    assert params["required"] == ["items", "address", "notes", "speed"]
    objects = all_objects(params)
    assert len(objects) >= 3  # arguments, Line, Address
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])
    text = orjson.dumps(spec).decode()
    assert '"title"' not in text and '"default"' not in text


def test_optional_arguments_are_nullable_and_docs_become_descriptions() -> None:
    params = Tool.from_function(place, default_timeout=20).parameters
    props = params["properties"]
    assert props["notes"] == {"type": ["string", "null"], "description": "anything else."}
    assert props["items"]["description"] == "what to deliver, one entry per product."
    assert props["items"]["type"] == "array"
    address = props["address"]
    assert {"type": "null"} in address["anyOf"]
    assert address["description"] == "where to; null to collect in the shop."
    assert props["speed"]["enum"] == ["normal", "express"]
    line = params["$defs"]["Line"]
    assert line["properties"]["quantity"]["description"] == "how many"
    addr = params["$defs"]["Address"]
    assert addr["properties"]["floor"]["type"] == ["integer", "null"]
    assert addr["required"] == ["street", "city", "floor"]


def test_decorator_options_and_functions_without_context() -> None:
    item = Tool.from_function(ping, default_timeout=20)
    assert item.name == "ping-2"
    assert item.timeout == 3
    assert item.description == "Answer pong."
    assert not item.takes_context
    assert item.parameters == {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    assert Tool.from_function(place, default_timeout=7).timeout == 7


def test_the_decorator_returns_the_function_unchanged() -> None:
    async def f(ctx: ToolContext) -> None:
        """Do nothing."""

    assert tool(f) is f
    with pytest.raises(TypeError, match="async def"):
        tool(lambda: None)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="positive"):
        tool(timeout=0)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("async def t(ctx, x):\n    'Doc.'\n", "needs a type hint"),
        ("async def t(ctx, x: dict[str, int]):\n    'Doc.'\n", "free-form dict"),
        ("async def t(ctx, x: Any):\n    'Doc.'\n", "no definite type"),
        ("async def t(ctx, *xs: int):\n    'Doc.'\n", "not allowed"),
        ("async def t(ctx, x: int):\n    pass\n", "docstring"),
        ("async def t(ctx, x: tuple[int, str]):\n    'Doc.'\n", "tuple"),
    ],
)
def test_signatures_strict_mode_cannot_express_are_refused(source: str, message: str) -> None:
    namespace: dict[str, Any] = {"Any": Any}
    exec(source, namespace)
    fn = tool(namespace["t"])
    with pytest.raises(ToolConfigError, match=message):
        Tool.from_function(fn, default_timeout=20)


def test_bad_tool_names_are_refused() -> None:
    @tool(name="has space")
    async def spaced() -> None:
        """Doc."""

    with pytest.raises(ToolConfigError, match="not allowed"):
        Tool.from_function(spaced, default_timeout=20)


def test_google_docstring_parsing() -> None:
    description, args = parse_docstring(
        """Summary line
        continues here.

        Args:
            a (int): first
                and more.
            b: second.

        Raises:
            ValueError: never listed as an argument.
        """
    )
    assert description == "Summary line continues here."
    assert args == {"a": "first and more.", "b": "second."}
    assert parse_docstring(None) == ("", {})


async def test_invalid_arguments_become_readable_errors_for_the_model() -> None:
    registry = ToolRegistry([Tool.from_function(place, default_timeout=20)])
    ctx: Any = None
    out = orjson.loads(await registry.call("place", '{"items": [{"sku": "A", "quantity": 0}]}', ctx))
    assert out == {"error": "invalid arguments: items.0.quantity: must be ≥ 1"}
    out = orjson.loads(await registry.call("place", '{"items": [{"sku": "A", "quantity": "many"}]}', ctx))
    assert out["error"] == "invalid arguments: items.0.quantity: must be a whole number"
    out = orjson.loads(await registry.call("place", "{}", ctx))
    assert out["error"] == "invalid arguments: items: is required"
    out = orjson.loads(await registry.call("place", "{not json", ctx))
    assert out["error"] == "invalid arguments: they are not valid JSON"
    out = orjson.loads(await registry.call("nope", "{}", ctx))
    assert "no tool called 'nope'" in out["error"]
    # Valid arguments, but this tool needs a conversation and got none.
    out = orjson.loads(await registry.call("place", '{"items": []}', ctx))
    assert "conversation" in out["error"]


async def test_results_are_serialised_with_orjson_and_text_passes_through() -> None:
    class Thing(pydantic.BaseModel):
        a: int

    @tool
    async def things() -> dict[Any, Any]:
        """Return things."""
        return {"model": Thing(a=1), "set": {2}, 3: "non-string key", "text": "città"}

    registry = ToolRegistry([Tool.from_function(things, default_timeout=20),
                             Tool.from_function(ping, default_timeout=20)])
    assert orjson.loads(await registry.call("things", "{}", None)) == {
        "model": {"a": 1}, "set": [2], "3": "non-string key", "text": "città",
    }
    assert await registry.call("ping-2", "{}", None) == "pong"
    assert [s["name"] for s in registry.specs()] == ["ping-2", "things"]
