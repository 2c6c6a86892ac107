"""The agent's tools: repo map, navigation, search, view, safe editing, shell, tests, submit.

Start with ``Toolbox(workspace, config, sandbox)``; ``toolbox.registry`` lists the tools' OpenAI schemas and
dispatches calls. Heavy modules load on first use, so ``import loopcoder.tools`` stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopcoder.tools.base import Tool, ToolError, ToolResult
    from loopcoder.tools.config import ToolsConfig
    from loopcoder.tools.registry import ToolRegistry
    from loopcoder.tools.toolbox import Toolbox

_EXPORTS = {
    "Tool": "base", "ToolError": "base", "ToolResult": "base", "ToolsConfig": "config",
    "ToolRegistry": "registry", "Toolbox": "toolbox",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"loopcoder.tools.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
