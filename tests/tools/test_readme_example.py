"""The README's "Writing your own tool" example works exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from bot.configuration.config import Config
from bot.persistence import Repositories
from bot.persistence.crm import Contact
from bot.tools import ToolContext, load_tools
from tests.tools.conftest import load_sample_catalogue

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The python block between the tool-example markers of README.md."""
    text = README.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- tool-example:start -->\s*```python\n(.*?)```\s*<!-- tool-example:end -->", text, re.DOTALL
    )
    assert match is not None, "README.md lost its tool example markers"
    return match.group(1)


async def test_the_readme_tool_example_loads_and_runs(
    tmp_path: Path, repos: Repositories, contact: Contact, ctx: ToolContext
) -> None:
    folder = tmp_path / "my_tools"
    folder.mkdir()
    (folder / "orders_status.py").write_text(readme_example(), encoding="utf-8")
    registry = load_tools(Config(tools_path=(str(folder),)), entry_points_=[])
    assert registry.load_errors == []
    spec = next(s for s in registry.specs() if s["name"] == "my_orders")
    assert spec["parameters"]["properties"]["limit"]["type"] == ["integer", "null"]
    assert registry.get("my_orders").timeout == 5  # type: ignore[union-attr]
    await load_sample_catalogue(repos)
    order = await repos.orders.create_draft(contact.id, [("PAN-INT-500", 2)], notes=None)
    result = orjson.loads(await registry.call("my_orders", '{"limit": null}', ctx))
    assert result == [{"code": order.code, "status": "draft", "total_cents": 640}]
