"""Tool calls out of a model answer, and whether each one can run.

Where calls are looked for, first hit wins: the answer's native ``tool_calls``; ``<tool_call>{...}</tool_call>``
blocks in the text (an unclosed last block counts); fenced code blocks (```json) holding
``{"name": ..., "arguments": ...}``; the whole text being such an object. Near-JSON (single quotes,
trailing commas, a missing closing brace) is repaired with json-repair. Every call that cannot run carries
the exact reason in ``error``, which is what the model is told.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pydantic import ValidationError

from loopcoder.tools.registry import ToolRegistry, validation_message

Source = Literal["native", "tag", "fenced", "json"]

_TAG = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_FENCE = re.compile(r"```[ \t]*(?:json|tool_call|tool|javascript)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclass
class ToolCall:
    """One call as the model wrote it. ``error`` says why it cannot run (None: it is well-formed)."""

    id: str
    name: Optional[str]
    arguments: Optional[dict[str, Any]]
    raw: str
    source: Source
    repaired: bool = False
    error: Optional[str] = None
    unreadable: bool = False  # not even {name, arguments}: it cannot be sent back as a tool call

    @property
    def ok(self) -> bool:
        return self.error is None

    def openai(self) -> dict[str, Any]:
        """The call in OpenAI's shape, arguments as normalised JSON, for the history sent back."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments or {})}}


@dataclass
class ParsedAnswer:
    text: str  # the answer's text without the calls that could be read
    calls: list[ToolCall] = field(default_factory=list)

    @property
    def well_formed(self) -> list[ToolCall]:
        return [c for c in self.calls if c.ok]


def parse_answer(content: Optional[str], native: list[dict[str, Any]], id_prefix: str) -> ParsedAnswer:
    """Find the tool calls of one answer (not yet checked against any tools: see ``check_calls``)."""
    content = content or ""
    if native:
        calls = [_native_call(tc, f"{id_prefix}_{i}") for i, tc in enumerate(native)]
        return ParsedAnswer(content, calls)
    for source, pattern in (("tag", _TAG), ("fenced", _FENCE)):
        found = [(m.span(), _text_call(m.group(1), "", source)) for m in pattern.finditer(content)]
        if source == "fenced":  # a fenced block is a call only if it reads as one: it may be plain code
            found = [(span, call) for span, call in found if not call.unreadable]
        if found:
            for i, (_, call) in enumerate(found):
                call.id = f"{id_prefix}_{i}"
            # unreadable blocks stay in the text sent back, so the model sees what it wrote
            text = _cut(content, [span for span, call in found if not call.unreadable])
            return ParsedAnswer(text, [call for _, call in found])
    stripped = content.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        call = _text_call(stripped, f"{id_prefix}_0", "json")
        if not call.unreadable:
            return ParsedAnswer("", [call])
    return ParsedAnswer(content)


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    pieces, last = [], 0
    for start, end in spans:
        pieces.append(text[last:start])
        last = end
    pieces.append(text[last:])
    return "".join(pieces).strip()


def check_calls(answer: ParsedAnswer, registry: ToolRegistry, all_tools: list[str], phase: str) -> None:
    """Set ``error`` on each call this phase cannot run: unknown or refused tool, arguments that do not fit."""
    for call in answer.calls:
        if call.error:
            continue
        if call.name not in registry.tools:
            allowed = ", ".join(registry.names)
            if call.name in all_tools:
                call.error = (f"{call.name} is not available in the {phase} phase (it may change files); "
                              f"use one of: {allowed}")
            else:
                call.error = f"unknown tool {call.name!r}; available tools: {allowed}"
            continue
        try:
            registry.tools[call.name].args.model_validate(call.arguments)
        except ValidationError as exc:
            call.error = f"bad arguments for {call.name}: {validation_message(exc)}"


CUT_CALL = ("your answer was cut at max_tokens inside this call, so it was not run (its arguments end where the "
            "answer stopped); send it again, shorter: for str_replace, old_str holds only the lines that change")


def refuse_cut_call(answer: ParsedAnswer, finish_reason: Optional[str]) -> None:
    """An answer cut at max_tokens whose last call needed a JSON repair was cut inside that call: its arguments
    are whatever the repair closed (a str_replace would apply half a new_str, a shell half a command), so it
    is refused, not run. Calls before it, and a last call that parsed as it was, are whole."""
    if finish_reason != "length" or not answer.calls:
        return
    last = answer.calls[-1]
    if last.repaired and not last.unreadable:
        last.error = CUT_CALL


def _native_call(tc: dict[str, Any], fallback_id: str) -> ToolCall:
    fn = tc.get("function") or {}
    call_id = tc.get("id") or fallback_id
    name, raw_args = fn.get("name"), fn.get("arguments")
    raw = json.dumps({"name": name, "arguments": raw_args}) if not isinstance(raw_args, str) else \
        f'{{"name": {json.dumps(name)}, "arguments": {raw_args}}}'
    if not isinstance(name, str) or not name:
        return ToolCall(call_id, None, None, raw, "native", error="the tool call has no function name",
                        unreadable=True)
    if isinstance(raw_args, dict):
        return ToolCall(call_id, name, raw_args, raw, "native")
    args, strict_error = _load_object(raw_args or "{}")
    if not isinstance(args, dict):
        return ToolCall(call_id, name, None, raw, "native", unreadable=True,
                        error=f"arguments of {name} are {strict_error or _not_object(args)}")
    return ToolCall(call_id, name, args, raw, "native", repaired=strict_error is not None)


def _text_call(block: str, call_id: str, source: Source) -> ToolCall:
    body = block.strip()
    obj, strict_error = _load_object(body)
    repaired = strict_error is not None

    def unreadable(error: str, name: Optional[str] = None) -> ToolCall:
        # a repair that still does not give {name, arguments: {...}} is reported as the JSON error it was
        return ToolCall(call_id, name, None, body, source, error=f"the tool call is {strict_error}"
                        if strict_error else error, unreadable=True)

    if not isinstance(obj, dict):
        return unreadable(f"the tool call is {_not_object(obj)}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return unreadable('the tool call has no "name": write {"name": "<tool>", "arguments": {...}}')
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # arguments double-encoded as a JSON string, as in OpenAI's wire format
        args, inner_error = _load_object(args or "{}")
        if not isinstance(args, dict):
            return unreadable(f"arguments of {name} are {inner_error or _not_object(args)}", name)
        repaired = repaired or inner_error is not None
    if not isinstance(args, dict):
        return unreadable(f"arguments of {name} must be a JSON object, got {type(args).__name__}", name)
    return ToolCall(call_id, name, args, body, source, repaired=repaired)


def _not_object(value: Any) -> str:
    return f"not a JSON object (got {type(value).__name__})"


def _load_object(text: str) -> tuple[Any, Optional[str]]:
    """(value, strict error): the strict parse when it works (error None), else json-repair's object, or None.

    The error is the strict parser's message; json-repair's answer counts only if it is a non-empty
    object (it returns something for any input, "" for prose)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        strict_error = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
    import json_repair

    try:
        value = json_repair.repair_json(text, return_objects=True)
    except Exception:  # noqa: BLE001 - the repair library failing is the same as nothing to repair
        value = None
    return (value if isinstance(value, dict) and value else None), strict_error
