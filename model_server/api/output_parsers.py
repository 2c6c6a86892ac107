"""The model's chat output split into reasoning, content and tool calls, incrementally.

LoopCoder checkpoints write reasoning inside ``<think>...</think>`` (in thinking mode the generation
prompt already opens the block, so the output starts inside it) and tool calls as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks. Both parsers take text in
arbitrary pieces and never emit a piece of a tag: text that could be the start of a tag is held back
until the next piece decides it. A whole response is parsed by pushing it in one piece, so streamed
and non-streamed answers are the same text by construction.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from .detokenizer import partial_suffix_len

THINK_START, THINK_END = "<think>", "</think>"
TOOL_START, TOOL_END = "<tool_call>", "</tool_call>"


@dataclass
class ParsedToolCall:
    """One tool call in OpenAI form: ``arguments`` is a JSON string."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def parse_tool_call_json(block: str) -> ParsedToolCall | None:
    """The call in one ``<tool_call>`` block's text, or None when it is not a JSON object with a name."""
    try:
        obj = json.loads(block.strip())
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            json.loads(args)
        except json.JSONDecodeError:
            return None
    else:
        args = json.dumps(args, ensure_ascii=False)
    return ParsedToolCall(obj["name"], args)


class ReasoningParser:
    """Route text inside ``<think>...</think>`` to reasoning and the rest to content.

    ``starts_in_think``: the prompt ends inside an open think block (thinking mode). Otherwise a think
    block is recognised only at the very start of the output. Reasoning is stripped of surrounding
    whitespace, and content of the whitespace that follows ``</think>``.
    """

    def __init__(self, starts_in_think: bool):
        self.state = "think" if starts_in_think else "start"
        self.buf = ""
        self.reasoning_started = False
        self.strip_content = False

    def push(self, text: str) -> tuple[str, str]:
        """(reasoning, content) that ``text`` completes."""
        self.buf += text
        reasoning, content = "", ""
        while True:
            if self.state == "start":
                head = self.buf.lstrip()
                if head.startswith(THINK_START):
                    self.buf, self.state = head[len(THINK_START):], "think"
                    continue
                if THINK_START.startswith(head):  # empty, or a prefix of the tag: undecided
                    return reasoning, content
                self.state = "content"
                continue
            if self.state == "think":
                end = self.buf.find(THINK_END)
                if end >= 0:
                    reasoning += self._reasoning(self.buf[:end].rstrip())
                    self.buf, self.state, self.strip_content = self.buf[end + len(THINK_END):], "content", True
                    continue
                keep = partial_suffix_len(self.buf, [THINK_END])
                ready = self.buf[:len(self.buf) - keep]
                body = ready.rstrip()  # trailing whitespace waits: it is dropped if </think> follows
                reasoning += self._reasoning(body)
                self.buf = self.buf[len(body):]
                return reasoning, content
            # content
            if self.strip_content:
                self.buf = self.buf.lstrip()
                if not self.buf:
                    return reasoning, content
                self.strip_content = False
            content += self.buf
            self.buf = ""
            return reasoning, content

    def _reasoning(self, text: str) -> str:
        if not self.reasoning_started:
            text = text.lstrip()
            self.reasoning_started = bool(text)
        return text

    def finish(self) -> tuple[str, str]:
        """(reasoning, content) still held at the end of the output."""
        buf, self.buf = self.buf, ""
        if self.state == "think":
            return self._reasoning(buf.rstrip()), ""
        if self.state == "start":
            return "", buf
        return "", "" if self.strip_content else buf


class ToolCallParser:
    """Turn ``<tool_call>{json}</tool_call>`` blocks in content into tool calls.

    A block whose text is not a JSON object with a ``name`` stays in the content, tags included.
    Whitespace next to parsed calls is dropped; the rest of the content is kept as the model wrote it.
    ``max_calls`` (1 when the request sets parallel_tool_calls=false) drops further calls.
    """

    def __init__(self, enabled: bool = True, max_calls: int | None = None):
        self.enabled = enabled
        self.max_calls = max_calls
        self.inside = False
        self.buf = ""
        self.pending_ws = ""  # whitespace after the last content: kept only if more content follows
        self.block_ws = ""    # that whitespace, when a block started right after it
        self.num_calls = 0
        self.after_call = False  # the whitespace that follows a parsed call is dropped too

    def push(self, text: str) -> tuple[str, list[ParsedToolCall]]:
        """(content, completed calls) that ``text`` completes."""
        if not self.enabled:
            return text, []
        self.buf += text
        content, calls = "", []
        while True:
            if self.inside:
                end = self.buf.find(TOOL_END)
                if end < 0:
                    return content, calls
                block, self.buf, self.inside = self.buf[:end], self.buf[end + len(TOOL_END):], False
                content += self._close_block(block, closed=True, calls=calls)
                continue
            start = self.buf.find(TOOL_START)
            if start >= 0:
                content += self._content(self.buf[:start])
                self.block_ws, self.pending_ws = self.pending_ws, ""
                self.buf, self.inside = self.buf[start + len(TOOL_START):], True
                continue
            keep = partial_suffix_len(self.buf, [TOOL_START])
            content += self._content(self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return content, calls

    def finish(self) -> tuple[str, list[ParsedToolCall]]:
        """(content, calls) still held at the end of the output; an unclosed block is parsed as is."""
        if not self.enabled:
            return "", []
        calls: list[ParsedToolCall] = []
        if self.inside:
            self.inside = False
            content = self._close_block(self.buf, closed=False, calls=calls)
        else:
            content = self._content(self.buf)
        self.buf = ""
        if not self.num_calls:  # no calls: the content is exactly what the model wrote
            content += self.pending_ws
        self.pending_ws = ""
        return content, calls

    def _content(self, text: str) -> str:
        if self.after_call:
            text = text.lstrip()
            self.after_call = not text
        if not text:
            return ""
        body = text.rstrip()
        if not body:
            self.pending_ws += text
            return ""
        out = self.pending_ws + body
        self.pending_ws = text[len(body):]
        return out

    def _close_block(self, block: str, closed: bool, calls: list[ParsedToolCall]) -> str:
        call = parse_tool_call_json(block)
        if call is None:  # not a call: give the text back as content, tags included
            raw = TOOL_START + block + (TOOL_END if closed else "")
            ws, self.block_ws = self.block_ws, ""
            self.pending_ws = ws
            return self._content(raw)
        self.block_ws, self.after_call = "", True
        if self.max_calls is None or self.num_calls < self.max_calls:
            self.num_calls += 1
            calls.append(call)
        return ""


class ChatOutputParser:
    """Reasoning first, then tool calls in what remains: text in, (reasoning, content, calls) out."""

    def __init__(self, starts_in_think: bool, parse_tools: bool, max_calls: int | None = None):
        self.reasoning = ReasoningParser(starts_in_think)
        self.tools = ToolCallParser(parse_tools, max_calls)

    def push(self, text: str) -> tuple[str, str, list[ParsedToolCall]]:
        reasoning, content = self.reasoning.push(text)
        content, calls = self.tools.push(content) if content else ("", [])
        return reasoning, content, calls

    def finish(self) -> tuple[str, str, list[ParsedToolCall]]:
        reasoning, content = self.reasoning.finish()
        content, calls = self.tools.push(content) if content else ("", [])
        more_content, more_calls = self.tools.finish()
        return reasoning, content + more_content, calls + more_calls

    def parse(self, text: str) -> tuple[str, str, list[ParsedToolCall]]:
        """Parse a whole output at once (same result as pushing it in pieces)."""
        r1, c1, k1 = self.push(text)
        r2, c2, k2 = self.finish()
        return r1 + r2, c1 + c2, k1 + k2
