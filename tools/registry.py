"""The registry: lists tools with their OpenAI schemas and dispatches one tool call to the right tool.

``call(name, arguments)`` never raises for anything a model can send: an unknown tool, arguments that are
not JSON or do not fit the schema, and errors inside the tool all come back as a ``ToolResult`` with
``ok=False`` and a one-line ``error: ...`` output the model can act on.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from loopcoder.tools.base import Tool, ToolError, ToolResult


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool]):
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self.tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    def schemas(self, read_only: bool = False) -> list[dict[str, Any]]:
        """OpenAI ``tools=`` list; ``read_only`` keeps only the tools that change nothing (for the planner)."""
        return [t.schema() for t in self.tools.values() if t.read_only or not read_only]

    def subset(self, names: Iterable[str]) -> "ToolRegistry":
        names = list(names)
        missing = [n for n in names if n not in self.tools]
        if missing:
            raise KeyError(f"unknown tools: {', '.join(missing)}")
        return ToolRegistry(self.tools[n] for n in names)

    def dispatch(self, tool_call: dict[str, Any]) -> ToolResult:
        """Run one tool call as a model sends it: ``{"name", "arguments"}`` or OpenAI's
        ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        fn = tool_call.get("function", tool_call) if isinstance(tool_call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            return ToolResult.failure("?", "a tool call needs a function name: {\"name\": ..., \"arguments\": {...}}")
        return self.call(fn["name"], fn.get("arguments"))

    def call(self, name: str, arguments: str | dict[str, Any] | None) -> ToolResult:
        """Run tool ``name`` with ``arguments`` (a JSON object, as text or parsed)."""
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult.failure(name, f"unknown tool {name!r}; available tools: {', '.join(self.tools)}")
        if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            arguments = {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                return ToolResult.failure(name, f"arguments for {name} are not valid JSON ({exc.msg} at "
                                                f"character {exc.pos}); send one JSON object")
        if not isinstance(arguments, dict):
            return ToolResult.failure(name, f"arguments for {name} must be a JSON object, got "
                                            f"{type(arguments).__name__}")
        try:
            args = tool.args.model_validate(arguments)
        except ValidationError as exc:
            return ToolResult.failure(name, f"bad arguments for {name}: {validation_message(exc)}")
        try:
            out = tool.run(args)
        except ToolError as exc:
            return ToolResult.failure(name, str(exc).replace("\n", " "))
        except Exception as exc:  # noqa: BLE001 - a tool bug must not end the agent's episode
            return ToolResult.failure(name, f"{name} failed unexpectedly: {type(exc).__name__}: {exc}"[:500])
        return ToolResult(name=name, ok=True, output=out.render(), data=out)


def validation_message(exc: ValidationError) -> str:
    """A pydantic validation error as one line a model can act on (also used by the agent's call parser)."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown argument {key!r}")
        elif err["type"] == "missing":
            parts.append(f"missing required argument {key!r}")
        else:
            parts.append(f"{key}: {err['msg']} (got {err['input']!r})"[:200])
    return "; ".join(parts)
