"""Structured outputs: the grammar (an engine GrammarSpec) that a chat request's answer must follow.

- ``response_format`` ``json_schema`` / ``json_object``: the answer is JSON (of that schema). In thinking
  mode the grammar first lets the model think freely up to ``</think>``, then requires the JSON.
- a forced tool call (``tool_choice`` ``required`` or a named function; the prompt is prefilled with the
  opening of the call, prompts.py): the rest of the call must be one of the offered functions with
  arguments that follow its ``parameters`` schema, then ``</tool_call>`` and the end of the answer (with
  ``parallel_tool_calls``, more complete calls may follow a required one).
- ``tool_choice`` ``auto``: free text, but every ``<tool_call>`` block the model opens must be a valid
  call, when a tool has ``strict: true`` or the server runs with ``constrain_tool_calls: auto``.

The grammars are xgrammar structural tags (the format vLLM and SGLang accept as ``structural_tag``),
written out here so the engine only compiles them.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from .output_parsers import THINK_END, TOOL_END, TOOL_START
from .prompts import ChatPrompt
from .protocol import ChatCompletionRequest, ResponseFormat, ToolDefinition

ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _const(value: str) -> dict:
    return {"type": "const_string", "value": value}


def _json(schema: dict[str, Any]) -> dict:
    from loopcoder.model_server.engine.types import JSON_MAX_WHITESPACE

    return {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": JSON_MAX_WHITESPACE}


def _call_head(name: str) -> str:
    # the same text prompts.forced_prefill writes for a named call, and the chat template shows
    return '{"name": ' + json.dumps(name) + ', "arguments": '


def _call_body(tool: ToolDefinition) -> dict:
    """One call after ``<tool_call>\\n``: name, arguments of the function's schema, closing tag."""
    return {"type": "sequence", "elements": [_const(_call_head(tool.function.name)),
                                             _json(tool.function.parameters or ANY_OBJECT),
                                             _const("}\n" + TOOL_END)]}


def _spec(fmt: dict):
    from loopcoder.model_server.engine.types import GrammarSpec

    return GrammarSpec(kind="structural_tag", value=json.dumps({"type": "structural_tag", "format": fmt}))


def forced_call_format(tools: list[ToolDefinition], prompt: ChatPrompt, named: Optional[str]) -> dict:
    """The grammar of the answer after a forced call's prefill."""
    if named is not None:
        [tool] = [t for t in tools if t.function.name == named]
        return {"type": "sequence", "elements": [_json(tool.function.parameters or ANY_OBJECT),
                                                 _const("}\n" + TOOL_END)]}
    one = {"type": "or", "elements": [_call_body(t) for t in tools]}
    if prompt.max_calls == 1:
        return one
    more = {"type": "star", "content": {"type": "sequence", "elements": [_const("\n" + TOOL_START + "\n"), one]}}
    return {"type": "sequence", "elements": [one, more]}


def auto_calls_format(tools: list[ToolDefinition], prompt: ChatPrompt) -> dict:
    """Free text in which every <tool_call> block must be a valid call of an offered function."""
    tags = [{"type": "tag", "begin": TOOL_START + "\n" + _call_head(t.function.name),
             "content": _json(t.function.parameters or ANY_OBJECT), "end": "}\n" + TOOL_END} for t in tools]
    return {"type": "triggered_tags", "triggers": [TOOL_START], "tags": tags,
            "stop_after_first": prompt.max_calls == 1}


def response_format_spec(fmt: Optional[ResponseFormat], starts_in_think: bool):
    """GrammarSpec of a response_format (None for text)."""
    from loopcoder.model_server.engine.types import GrammarSpec

    if fmt is None or fmt.type == "text":
        return None
    schema = fmt.json_schema.schema_ if fmt.type == "json_schema" else ANY_OBJECT
    if not starts_in_think:
        if fmt.type == "json_object":
            return GrammarSpec(kind="json_object")
        return GrammarSpec(kind="json_schema", value=json.dumps(schema))
    think = {"type": "tag", "begin": "", "content": {"type": "any_text"}, "end": THINK_END}
    blank = {"type": "regex", "pattern": r"[ \n]{0,2}"}
    return _spec({"type": "sequence", "elements": [think, blank, _json(schema)]})


def chat_grammar(req: ChatCompletionRequest, prompt: ChatPrompt, constrain_tool_calls: str = "forced"):
    """GrammarSpec for a chat request (after ``with_tools``), or None when the answer is free text.

    ``constrain_tool_calls``: "forced" (required and named tool_choice only) or "auto" (also every
    call the model makes on its own, as a tool with ``strict: true`` always gets).
    """
    tools = req.tools or []
    if prompt.forced:
        named = req.tool_choice.function.name if prompt.forced == "named" else None
        return _spec(forced_call_format(tools, prompt, named))
    spec = response_format_spec(req.response_format, prompt.starts_in_think)
    if spec is not None:
        return spec
    if prompt.parse_tools and (constrain_tool_calls == "auto" or any(t.function.strict for t in tools)):
        return _spec(auto_calls_format(tools, prompt))
    return None
