"""What every tool is: a pydantic argument model, an OpenAI function schema, a typed result.

A tool's ``run`` takes its validated arguments and returns a ``ToolOutput`` whose ``render()`` is the text
the model reads; it raises ``ToolError`` for anything the model did wrong (the registry turns that into an
error result). Nothing a model sends can crash the caller.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializeAsAny

from loopcoder.tools.workspace import ToolError

__all__ = ["Tool", "ToolArgs", "ToolError", "ToolOutput", "ToolResult"]


class ToolArgs(BaseModel):
    """Base of every argument model: unknown arguments are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ToolOutput(BaseModel):
    """Base of every typed tool result."""

    def render(self) -> str:
        return self.model_dump_json()


class ToolResult(BaseModel):
    """One tool call's outcome as the agent records it: ``output`` is what the model reads."""

    name: str
    ok: bool
    output: str
    data: SerializeAsAny[ToolOutput] | None = None

    @classmethod
    def failure(cls, name: str, message: str) -> "ToolResult":
        return cls(name=name, ok=False, output=f"error: {message}")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[ToolArgs]
    run: Callable[[Any], ToolOutput]
    read_only: bool = True  # the planner may only call read-only tools

    def schema(self) -> dict[str, Any]:
        """OpenAI function-calling schema: {"type": "function", "function": {name, description, parameters}}."""
        params = _clean_schema(self.args.model_json_schema())
        params.setdefault("properties", {})
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": params}}


def _clean_schema(node: Any) -> Any:
    # pydantic's "title" keys are noise in a prompt; everything else is standard JSON schema.
    if isinstance(node, dict):
        return {k: _clean_schema(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_clean_schema(v) for v in node]
    return node
