"""The tool registry: discovery at start-up, the specs sent to the model, and safe calls."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import pkgutil
import re
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import orjson
import pydantic
import structlog

from bot.ai.privacy import mask_numbers
from bot.configuration.config import Config
from bot.tools.core import Tool, ToolContext, ToolError, is_tool
from bot.tools.schema import ToolConfigError, describe_validation_error

log = structlog.get_logger("bot.tools")

BUILTIN_PACKAGE = "bot.tools"
ENTRY_POINT_GROUP = "bot.tools"


class LoadError(NamedTuple):
    """A tool module that could not be loaded: where it is, and what went wrong."""

    module: str
    error: str


def _error(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def serialise(result: Any) -> str:
    """A tool's result as the string the model reads: text as it is, anything else as JSON."""
    if isinstance(result, str):
        return result
    return orjson.dumps(result, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


class ToolRegistry:
    """The tools the model may call, by name. Built once by the app; satisfies the engine's ToolRunner."""

    def __init__(self, tools: Iterable[Tool] = (), *, load_errors: Iterable[LoadError] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self.load_errors: list[LoadError] = list(load_errors)
        for item in tools:
            self.add(item)

    def add(self, item: Tool) -> None:
        """Register a tool; two tools with one name is a start-up error naming both modules."""
        existing = self._tools.get(item.name)
        if existing is not None and existing.fn is not item.fn:
            raise ToolConfigError(
                f"two tools are called {item.name!r}: one in {existing.module}, one in {item.module}. "
                "Rename one of them, e.g. with @tool(name=\"...\")."
            )
        self._tools[item.name] = item

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def get(self, name: str) -> Tool | None:
        """One tool by name."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Every tool name, sorted."""
        return sorted(self._tools)

    def specs(self) -> list[dict[str, Any]]:
        """Function tool definitions for the Responses API (strict mode), in a stable order."""
        return [self._tools[name].spec() for name in self.names()]

    async def call(self, name: str, arguments: str, context: Any) -> str:
        """Run one tool for the model. Never raises: every problem becomes an {"error": ...} text."""
        item = self._tools.get(name)
        if item is None:
            return _error(f"there is no tool called {name!r}; the tools are: {', '.join(self.names())}")
        try:
            raw = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return _error("invalid arguments: they are not valid JSON")
        try:
            kwargs = item.bind(raw)
        except pydantic.ValidationError as exc:
            return _error(f"invalid arguments: {describe_validation_error(exc)}")
        if item.takes_context and not isinstance(context, ToolContext):
            return _error(f"{name} can only be used in a conversation with a customer")
        started = time.monotonic()
        timer = asyncio.timeout(item.timeout)
        try:
            async with timer:
                if item.takes_context:
                    result = await item.fn(context, **kwargs)
                else:
                    result = await item.fn(**kwargs)
            text = serialise(result)
        except ToolError as exc:
            # A refusal often quotes what the model passed, which came from the customer.
            log.info("tool_refused", tool=name, reason=mask_numbers(str(exc)))
            return _error(str(exc))
        except TimeoutError as exc:
            if not timer.expired():
                return await self._failed(item, context, exc)
            log.warning("tool_timed_out", tool=name, timeout=item.timeout)
            await self._record(context, f"tool_failed:{name}", f"{name} took longer than {item.timeout:g} s")
            return _error(f"{name} took too long and was stopped; tell the customer you could not do it right now")
        except Exception as exc:
            return await self._failed(item, context, exc)
        log.info("tool_called", tool=name, seconds=round(time.monotonic() - started, 3))
        return text

    async def _failed(self, item: Tool, context: Any, exc: Exception) -> str:
        # The message (and so the traceback) may hold values the customer gave: numbers are masked.
        error = mask_numbers(f"{type(exc).__name__}: {exc}")
        log.error("tool_failed", tool=item.name, error=error,
                  traceback=mask_numbers("".join(traceback.format_exception(exc))))
        await self._record(context, f"tool_failed:{item.name}", error)
        return _error(f"{item.name} failed ({type(exc).__name__}); tell the customer you could not do it right now")

    @staticmethod
    async def _record(context: Any, kind: str, message: str) -> None:
        if not isinstance(context, ToolContext):
            return
        try:
            await context.repos.errors.record(kind, message, session_id=context.session_id)
        except Exception as exc:  # the diagnostics row is a nicety: never let it break the turn
            log.warning("tool_error_not_recorded", error=str(exc))


def tools_in(module: ModuleType) -> list[Any]:
    """The @tool functions defined in a module (not the ones it merely imports)."""
    return [v for v in vars(module).values() if is_tool(v) and getattr(v, "__module__", None) == module.__name__]


def _import_file(path: Path) -> ModuleType:
    # A unique, stable module name per file, so two directories may both hold a shop.py.
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"bot_user_tools_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: pydantic and typing resolve a module's own classes through sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    return f"{type(exc).__name__}: {exc}"


class _Collector:
    """Gathers tools and load errors while discovering; duplicates raise at once."""

    def __init__(self, default_timeout: float) -> None:
        self.default_timeout = default_timeout
        self.registry = ToolRegistry()

    def failed(self, where: str, exc: BaseException | str) -> None:
        message = exc if isinstance(exc, str) else _describe(exc)
        log.error("tool_module_failed", module=where, error=message)
        self.registry.load_errors.append(LoadError(where, message))

    def function(self, fn: Any, where: str) -> None:
        try:
            item = Tool.from_function(fn, default_timeout=self.default_timeout, source=where)
        except ToolConfigError as exc:
            self.failed(where, str(exc))
            return
        self.registry.add(item)

    def module(self, module: ModuleType, where: str) -> None:
        for fn in tools_in(module):
            self.function(fn, where)


def discover(
    *,
    tools_path: Iterable[str] = (),
    default_timeout: float = 20.0,
    builtins: bool = True,
    entry_points_: Iterable[EntryPoint] | None = None,
) -> ToolRegistry:
    """Find every tool: the built-in modules of bot.tools, each *.py in the tools_path directories, and
    the `bot.tools` entry points (a module or a single function each).

    A module that fails to import is logged and kept in `load_errors`; the server still starts.
    Two tools with the same name raise ToolConfigError.
    """
    found = _Collector(default_timeout)
    if builtins:
        package = importlib.import_module(BUILTIN_PACKAGE)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            qualified = f"{BUILTIN_PACKAGE}.{info.name}"
            try:
                module = importlib.import_module(qualified)
            except Exception as exc:
                found.failed(qualified, exc)
                continue
            found.module(module, qualified)
    for directory in tools_path:
        folder = Path(directory).expanduser()
        if not folder.is_dir():
            found.failed(directory, f"BOT_TOOLS_PATH lists {directory}, which is not a directory")
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                module = _import_file(path)
            except (Exception, SystemExit) as exc:
                found.failed(str(path), exc)
                continue
            found.module(module, str(path))
    points = entry_points(group=ENTRY_POINT_GROUP) if entry_points_ is None else entry_points_
    for point in points:
        where = f"entry point {point.name} ({point.value})"
        try:
            target = point.load()
        except (Exception, SystemExit) as exc:
            found.failed(where, exc)
            continue
        if isinstance(target, ModuleType):
            found.module(target, where)
        elif is_tool(target):
            found.function(target, where)
        else:
            found.failed(where, "it is neither a module nor a function marked with @tool")
    registry = found.registry
    log.info("tools_loaded", tools=registry.names(), failed=len(registry.load_errors))
    return registry


def load_tools(config: Config, *, entry_points_: Iterable[EntryPoint] | None = None) -> ToolRegistry:
    """The app's registry: built-ins, the directories of BOT_TOOLS_PATH and installed entry points."""
    return discover(
        tools_path=config.tools_path,
        default_timeout=config.tool_timeout_seconds,
        entry_points_=entry_points_,
    )
