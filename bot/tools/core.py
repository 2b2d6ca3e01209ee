"""The `@tool` decorator, the `ToolContext` every tool receives, and `Tool`, a function ready for the model."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import pydantic

from bot.configuration.config import Config
from bot.domain.conversation import ConversationKey
from bot.persistence import Repositories
from bot.persistence.crm import Contact
from bot.tools.schema import ToolConfigError, arguments_model, parse_docstring, strict_schema

MARK = "__bot_tool__"
# OpenAI's rule for function names.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(slots=True)
class TurnActions:
    """What tools asked the turn to do besides answering; the conversation's actor carries it out.

    Tools run inside their conversation's turn, so they never send or pause anything themselves:
    they leave it here, and the actor applies it with the turn's own write.
    """

    handoff_reason: str | None = None
    choices: dict[str, Any] | None = None  # offer_choices: {"text", "choices"}
    contact_changed: bool = False

    def hand_off(self, reason: str) -> None:
        """Pass the conversation to a person once this turn ends (the model's draft is dropped)."""
        self.handoff_reason = reason or "asked by the assistant"


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What the server tells a tool about the turn. Tools never take a phone number from the model.

    `contact` is resolved by the server from the conversation; `conversation_key` names the
    conversation; `actions` is how a tool asks the turn for a hand-off or buttons.
    """

    contact: Contact
    session_id: str
    language: str | None
    repos: Repositories
    clock: Callable[[], float]
    conversation_key: ConversationKey
    config: Config
    actions: TurnActions = field(default_factory=TurnActions)


class ToolError(Exception):
    """Raise from a tool to tell the model, in words, why it cannot do that (not logged as a failure)."""


@dataclass(frozen=True, slots=True)
class ToolOptions:
    """What `@tool(...)` was given; read at discovery."""

    name: str | None = None
    description: str | None = None
    timeout: float | None = None


@overload
def tool(fn: F, /) -> F: ...


@overload
def tool(*, name: str | None = None, description: str | None = None, timeout: float | None = None) -> Callable[[F], F]:
    ...


def tool(
    fn: F | None = None, /, *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> F | Callable[[F], F]:
    """Mark an `async def` as a tool the model may call: `@tool` or `@tool(name=..., timeout=5)`.

    The function is returned unchanged: it only gets an attribute, and the registry that the app
    builds at start-up turns it into a schema.
    """
    if timeout is not None and timeout <= 0:
        raise ValueError("@tool(timeout=...) must be a positive number of seconds")

    def mark(func: F) -> F:
        if not _is_async(func):
            raise TypeError(f"@tool needs an `async def` function, and {func.__qualname__} is not one")
        setattr(func, MARK, ToolOptions(name=name, description=description, timeout=timeout))
        return func

    return mark(fn) if fn is not None else mark


def _is_async(func: Callable[..., Any]) -> bool:
    # A helper, not inline: inspect.iscoroutinefunction's TypeGuard would narrow F away for mypy.
    return inspect.iscoroutinefunction(func)


def is_tool(value: object) -> bool:
    """True for a function marked with @tool."""
    return callable(value) and isinstance(getattr(value, MARK, None), ToolOptions)


@dataclass(frozen=True, slots=True)
class Tool:
    """A marked function with its argument model, its strict schema and its timeout."""

    name: str
    description: str
    fn: Callable[..., Awaitable[Any]]
    arguments: type[pydantic.BaseModel]
    parameter_names: tuple[str, ...]
    takes_context: bool
    parameters: dict[str, Any]
    timeout: float
    module: str  # where it was found (module name, file path or entry point), for error messages

    @classmethod
    def from_function(cls, fn: Callable[..., Awaitable[Any]], *, default_timeout: float,
                      source: str | None = None) -> Tool:
        """Read a @tool function's signature and docstring; raises ToolConfigError when it cannot be offered."""
        options = getattr(fn, MARK, None)
        if not isinstance(options, ToolOptions):
            raise ToolConfigError(f"{getattr(fn, '__qualname__', fn)!r} is not marked with @tool")
        name = options.name or fn.__name__
        if not _NAME.match(name):
            raise ToolConfigError(
                f"tool name {name!r} is not allowed: use at most 64 letters, digits, '_' or '-'"
            )
        summary, arg_docs = parse_docstring(fn.__doc__)
        description = options.description or summary
        if not description:
            raise ToolConfigError(f"tool {name}: add a docstring saying what it does (the model reads it)")
        model, names, takes_context = arguments_model(fn, tool_name=name, context_type=ToolContext,
                                                      arg_docs=arg_docs)
        return cls(
            name=name,
            description=description,
            fn=fn,
            arguments=model,
            parameter_names=tuple(names),
            takes_context=takes_context,
            parameters=strict_schema(model, tool_name=name),
            timeout=options.timeout or default_timeout,
            module=source or str(getattr(fn, "__module__", "?")),
        )

    def spec(self) -> dict[str, Any]:
        """The function tool definition for the Responses API, in strict mode."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": True,
        }

    def bind(self, raw: Any) -> dict[str, Any]:
        """Validate the model's arguments; returns keyword arguments, raises pydantic.ValidationError."""
        values = self.arguments.model_validate(raw)
        return {name: getattr(values, f"p{i}") for i, name in enumerate(self.parameter_names)}
