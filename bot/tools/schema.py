"""From a tool's signature and docstring to a pydantic model (validation) and a strict JSON schema (the model)."""

from __future__ import annotations

import copy
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

import pydantic


class ToolConfigError(Exception):
    """A tool cannot be offered to the model as written (bad signature, duplicate name…); the message says why."""


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$")
_ARG = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and the `Args:` descriptions by name."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    description: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in lines:
        heading = _SECTION.match(line)
        if heading:
            section = heading.group(1).lower()
            current, arg_indent = None, None
            continue
        if section is None:
            description.append(line)
            continue
        if section not in ("args", "arguments", "parameters") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if arg_indent is None:
            arg_indent = indent
        match = _ARG.match(line.strip())
        if indent <= arg_indent and match:
            current = match.group(1).lstrip("*")
            args[current] = match.group(2).strip()
        elif current is not None:
            args[current] = f"{args[current]} {line.strip()}".strip()
    # Paragraphs are kept (the model reads them), but wrapped lines are joined.
    paragraphs = "\n".join(description).strip().split("\n\n")
    text = "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())
    return text, args


def _is_context(param: inspect.Parameter, hint: Any, context_type: type) -> bool:
    return hint is context_type or param.name == "ctx"


def arguments_model(
    fn: Callable[..., Any], *, tool_name: str, context_type: type, arg_docs: dict[str, str]
) -> tuple[type[pydantic.BaseModel], list[str], bool]:
    """Build the pydantic model of a tool's arguments.

    Returns (model, parameter names in order, whether the first parameter is the injected context).
    Fields get internal names with the parameter name as alias, so a parameter called e.g. `json`
    or `schema` cannot clash with pydantic's own attributes.
    """
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ToolConfigError(f"tool {tool_name}: cannot read its type hints ({type(exc).__name__}: {exc})") from exc
    params = list(inspect.signature(fn).parameters.values())
    takes_context = bool(params) and _is_context(params[0], hints.get(params[0].name), context_type)
    if takes_context:
        params = params[1:]
    fields: dict[str, Any] = {}
    names: list[str] = []
    for index, param in enumerate(params):
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ToolConfigError(f"tool {tool_name}: *{param.name} is not allowed; list every argument by name")
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ToolConfigError(f"tool {tool_name}: {param.name} must not be positional-only")
        if param.name not in hints:
            raise ToolConfigError(f"tool {tool_name}: argument {param.name!r} needs a type hint (e.g. `: str`)")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[f"p{index}"] = (
            hints[param.name],
            pydantic.Field(default, alias=param.name, description=arg_docs.get(param.name)),
        )
        names.append(param.name)
    try:
        model = pydantic.create_model(
            f"{tool_name}_arguments", __config__=pydantic.ConfigDict(populate_by_name=False), **fields
        )
    except Exception as exc:
        raise ToolConfigError(f"tool {tool_name}: unsupported argument types ({exc})") from exc
    return model, names, takes_context


def strict_schema(model: type[pydantic.BaseModel], *, tool_name: str) -> dict[str, Any]:
    """The model's JSON schema in OpenAI strict form.

    Strict mode wants every object closed (`additionalProperties: false`) and every property in
    `required`; optional arguments stay optional by accepting null. Titles and defaults are noise
    to the model and are dropped.
    """
    try:
        raw = model.model_json_schema(by_alias=True)
    except Exception as exc:
        raise ToolConfigError(f"tool {tool_name}: cannot describe its arguments as JSON ({exc})") from exc
    defs: dict[str, Any] = raw.get("$defs", {})

    def resolve(ref: str) -> dict[str, Any]:
        name = ref.removeprefix("#/$defs/")
        if name not in defs:
            raise ToolConfigError(f"tool {tool_name}: unresolved schema reference {ref}")
        return copy.deepcopy(defs[name])

    def walk(node: Any, where: str) -> Any:
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "$ref" in node and len(node) > 1:
            # A $ref with siblings (e.g. a description) is inlined: strict mode wants $ref alone.
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**resolve(node["$ref"]), **siblings}
        if "allOf" in node and len(node["allOf"]) == 1:
            inner = node.pop("allOf")[0]
            node = {**(resolve(inner["$ref"]) if "$ref" in inner else inner), **node}
        node.pop("title", None)
        node.pop("default", None)
        if "oneOf" in node:
            node["anyOf"] = node.pop("oneOf")
        if node.get("type") == "object" or "properties" in node:
            extra = node.get("additionalProperties")
            if "properties" not in node or (extra is not None and extra is not False):
                raise ToolConfigError(
                    f"tool {tool_name}: {where} is a free-form dict; strict mode needs known keys, "
                    "so describe it with a TypedDict or a pydantic model"
                )
            node["properties"] = {k: walk(v, f"{where}.{k}") for k, v in node["properties"].items()}
            node["required"] = list(node["properties"])
            node["additionalProperties"] = False
        if "items" in node:
            node["items"] = walk(node["items"], f"{where}[]")
        if "prefixItems" in node:
            raise ToolConfigError(f"tool {tool_name}: {where} is a tuple; use a list or a TypedDict instead")
        if "anyOf" in node:
            node["anyOf"] = [walk(v, where) for v in node["anyOf"]]
            node = _collapse_nullable(node)
        if not ({"type", "anyOf", "$ref", "enum", "const"} & node.keys()):
            raise ToolConfigError(f"tool {tool_name}: {where} has no definite type (Any is not allowed)")
        return node

    schema = walk({k: v for k, v in raw.items() if k != "$defs"}, "arguments")
    if defs:
        schema["$defs"] = {name: walk(d, name) for name, d in defs.items()}
    return dict(schema)


def _collapse_nullable(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [{type: string}, {type: null}]` → `type: [string, null]`, the form the OpenAI docs show."""
    options = node["anyOf"]
    if len(options) != 2 or {"type": "null"} not in options:
        return node
    other = next(o for o in options if o != {"type": "null"})
    if set(other) - {"type", "description", "format", "enum"} or not isinstance(other.get("type"), str):
        return node
    merged = {k: v for k, v in node.items() if k != "anyOf"}
    merged.update({k: v for k, v in other.items() if k != "type"})
    merged["type"] = [other["type"], "null"]
    if "enum" in merged and None not in merged["enum"]:
        merged["enum"] = [*merged["enum"], None]
    return merged


_ERROR_WORDS: dict[str, str] = {
    "missing": "is required",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "literal_error": "is not one of the allowed values",
}


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    """Pydantic's errors in short words the model can act on: 'items.0.quantity: must be ≥ 1'."""
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind == "greater_than_equal":
            words = f"must be ≥ {ctx.get('ge')}"
        elif kind == "less_than_equal":
            words = f"must be ≤ {ctx.get('le')}"
        elif kind == "greater_than":
            words = f"must be > {ctx.get('gt')}"
        elif kind == "less_than":
            words = f"must be < {ctx.get('lt')}"
        elif kind == "string_too_long":
            words = f"must be at most {ctx.get('max_length')} characters"
        elif kind == "string_too_short":
            words = f"must be at least {ctx.get('min_length')} characters"
        else:
            words = _ERROR_WORDS.get(kind, str(error["msg"]))
        parts.append(f"{where}: {words}")
    return "; ".join(parts[:10])
