"""Grounding: does every name a tool call uses appear in the prompt the model answered?

A small model learns to copy what it is shown and, as readily, to invent what its teacher knew from
elsewhere. A teacher episode is *grounded* when each path, test id, symbol, search pattern and edited line
of its tool calls is present in that request's prompt: the task, the tool results the agent kept (old
outputs are elided, see agent/context.py), or the model's own earlier calls. Checked on the request bodies
rebuilt from a trajectory (``agent.requests.episode_requests``), i.e. on exactly what training shows.

Matching rules (deliberately simple, so a reader can predict them):
- paths and test ids: the exact string, not inside a longer name (``parse.py`` is not in ``test_parse.py``);
- symbols: every dotted part as a whole word (``Parser.findall`` needs ``Parser`` and ``findall``);
- search patterns: the text after an optional ``def ``/``class `` as a substring;
- ``str_replace``/``insert`` anchors: every non-blank line of ``old_str`` as a substring (views show them).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

_PY_PATH = re.compile(r"[\w./-]+\.py(?:::[^\s'\"]+)?")


def message_text(messages: Iterable[dict]) -> str:
    """The text of chat messages as the model reads it: contents and the arguments of earlier tool calls."""
    parts: list[str] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text") or "" for p in content if isinstance(p, dict)]
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or call
            args = fn.get("arguments")
            parts.append(args if isinstance(args, str) else json.dumps(args or {}))
    return "\n".join(parts)


def has_path(text: str, path: str) -> bool:
    path = path[2:] if path.startswith("./") else path
    return bool(path) and re.search(rf"(?<![\w.-]){re.escape(path)}(?!\w)", text) is not None


def has_symbol(text: str, symbol: str) -> bool:
    parts = [p for p in symbol.split(".") if p]
    return bool(parts) and all(re.search(rf"(?<!\w){re.escape(p)}(?!\w)", text) for p in parts)


def has_code(text: str, code: str) -> bool:
    lines = [ln.strip() for ln in code.splitlines() if ln.strip()]
    return bool(lines) and all(ln in text for ln in lines)


def needs(name: str, args: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) pairs a call of tool ``name`` with ``args`` names; kind is path, symbol, text or code."""
    out: list[tuple[str, str]] = []
    if name == "run_tests":
        out += [("path", p) for p in args.get("paths") or []]
    elif name == "shell":
        out += [("path", p) for p in _PY_PATH.findall(args.get("command") or "")]
    elif name in ("view", "outline", "undo", "insert", "str_replace"):
        path = args.get("path") or ""
        if path.strip("./"):
            out.append(("path", path))
        if name == "str_replace" and args.get("old_str"):
            out.append(("code", args["old_str"]))
    elif name == "search":
        pattern = re.sub(r"^(def|class)\s+", "", args.get("pattern") or "")
        out.append(("text", pattern))
        if args.get("path"):
            out.append(("path", args["path"]))
    elif name == "find_definition":
        out.append(("symbol", args.get("symbol") or ""))
    elif name == "repo_map":
        out += [("symbol", s) for s in args.get("mentioned_symbols") or []]
        out += [("path", p) for p in args.get("mentioned_files") or []]
    return out


def present(text: str, kind: str, value: str) -> bool:
    if kind == "path":
        return has_path(text, value)
    if kind == "symbol":
        return has_symbol(text, value)
    if kind == "code":
        return has_code(text, value)
    return bool(value) and value in text


def missing(text: str, name: str, args: dict[str, Any]) -> list[str]:
    """What a call names that ``text`` (its prompt) does not show, as 'kind value' strings."""
    return [f"{kind} {value[:80]!r}" for kind, value in needs(name, args) if not present(text, kind, value)]


def episode_grounding(path: str | Path) -> list[dict]:
    """One row per tool call of a trajectory: step, tool, and what it named that its prompt lacked."""
    from loopcoder.agent.requests import episode_requests

    rows = []
    for req in episode_requests(path).requests:
        if req.answer is None:
            continue
        text = message_text(req.body.get("messages") or [])
        for call in req.answer.get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except json.JSONDecodeError:
                args = {}
            rows.append({"step": req.step, "tool": fn.get("name"),
                         "missing": missing(text, fn.get("name") or "", args if isinstance(args, dict) else {})})
    return rows


def ungrounded(path: str | Path) -> list[str]:
    """'step N tool: what' for every call of the trajectory that names something its prompt did not show."""
    return [f"step {r['step']} {r['tool']}: {', '.join(r['missing'])}" for r in episode_grounding(path) if r["missing"]]
