"""Keeping a conversation inside the model's context.

Three measures, cheapest first: a long tool output is cut to its head and tail when it is recorded;
tool outputs older than ``elide_after_turns`` model turns are replaced by a one-line note; when the
prompt nears ``summarize_at`` x ``max_model_len`` the oldest turns become one summary message (built from
the calls and the first line of each result, no extra model call). Token counts are estimates: the size
of the JSON sent, scaled by what the server's ``usage.prompt_tokens`` said about the previous request.
Tool schemas sent to the model are compacted (validation keywords and null-unions dropped; the registry
still validates every call against the full schema).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

from loopcoder.agent.config import ContextSettings

ELIDED = "[output elided"
_SCHEMA_NOISE = {"additionalProperties", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
                 "exclusiveMaximum", "minItems", "maxItems"}


def cut_middle(text: str, limit: int) -> str:
    """``text`` if it fits ``limit`` characters, else its head and tail around a note of what was cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def compact_schema(node: Any, parent_key: str = "") -> Any:
    """A tool schema without what a model does not need: ``anyOf [T, null]`` becomes T; null and empty
    defaults (``false``, ``""``, ``[]``: what an absent optional argument means anyway),
    ``additionalProperties`` and range/length keywords are dropped (property names are kept as they are)."""
    if isinstance(node, list):
        return [compact_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
        other = next(x for x in any_of if x != {"type": "null"})
        node = {**other, **{k: v for k, v in node.items() if k != "anyOf"}}
    out = {}
    for key, value in node.items():
        if parent_key != "properties" and (key in _SCHEMA_NOISE or (key == "default" and value in (None, False, "", []))):
            continue
        out[key] = compact_schema(value, key)
    return out


class ContextWindow:
    """The context policy for one phase's history (a list of OpenAI message dicts, changed in place)."""

    def __init__(self, settings: ContextSettings, max_model_len: Optional[int],
                 render_summary: Callable[[list[str]], str]):
        self.settings = settings
        self.max_model_len = settings.max_model_len or max_model_len
        self.render_summary = render_summary
        self.scale = 1.0  # server tokens per estimated token, learnt from usage
        self.summary_lines: list[str] = []
        self.dropped_lines = 0
        self.summary_index: Optional[int] = None  # where the summary message sits in the history

    # -- token estimates --------------------------------------------------------------------------
    def _raw(self, messages: list[dict], tools: list[dict]) -> float:
        chars = len(json.dumps(messages, ensure_ascii=False)) + len(json.dumps(tools, ensure_ascii=False))
        return chars / self.settings.chars_per_token

    def estimate(self, messages: list[dict], tools: list[dict]) -> int:
        return int(self._raw(messages, tools) * self.scale)

    def learn(self, messages: list[dict], tools: list[dict], prompt_tokens: int) -> None:
        """Calibrate the estimate on the server's count for the request just answered."""
        raw = self._raw(messages, tools)
        if prompt_tokens > 0 and raw > 0:
            self.scale = min(4.0, max(0.25, prompt_tokens / raw))

    # -- measures ---------------------------------------------------------------------------------
    def observation(self, text: str) -> str:
        return cut_middle(text, self.settings.max_observation_chars)

    def elide_old_outputs(self, messages: list[dict]) -> None:
        """Replace tool outputs older than ``elide_after_turns`` assistant turns by a one-line note."""
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if len(turns) <= self.settings.elide_after_turns:
            return
        boundary = turns[-self.settings.elide_after_turns]
        for m in messages[:boundary]:
            content = m.get("content")
            if m["role"] == "tool" and isinstance(content, str) and not content.startswith(ELIDED):
                m["content"] = (f"{ELIDED} ({len(content)} characters; first line: {_first_line(content)}); "
                                "call the tool again if you need it]")

    def needs_summary(self, messages: list[dict], tools: list[dict], max_tokens: int) -> bool:
        if not self.max_model_len:
            return False
        limit = self.settings.summarize_at * self.max_model_len
        return self.estimate(messages, tools) + min(max_tokens, self.max_model_len // 4) > limit

    def summarize(self, messages: list[dict], keep_last_turns: Optional[int] = None) -> int:
        """Fold all turns but the last ``keep_last_turns`` into one summary message; returns turns folded."""
        keep = self.settings.keep_last_turns if keep_last_turns is None else keep_last_turns
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        start = (self.summary_index + 1) if self.summary_index is not None else (turns[0] if turns else len(messages))
        old = [i for i in turns if i >= start]
        if len(old) <= keep:
            return 0
        end = old[-keep] if keep else len(messages)
        folded = messages[start:end]
        self.summary_lines += _summary_lines(folded)
        # the summary itself must stay small: a quarter of the context at most, the oldest lines go first
        budget = int((self.max_model_len or 8192) * self.settings.chars_per_token / 4)
        while len(self.summary_lines) > 1 and sum(len(line) + 1 for line in self.summary_lines) > budget:
            self.summary_lines.pop(0)
            self.dropped_lines += 1
        lines = ([f"- ({self.dropped_lines} earlier lines left out)"] if self.dropped_lines else []) + self.summary_lines
        summary = {"role": "user", "content": self.render_summary(lines)}
        if self.summary_index is None:
            messages[start:end] = [summary]
            self.summary_index = start
        else:
            messages[start:end] = []
            messages[self.summary_index] = summary
        return len(old) - keep

    def compact(self, messages: list[dict]) -> int:
        """After the server refused the prompt as too long: fold every turn but the last, cut what is left."""
        folded = self.summarize(messages, keep_last_turns=1)
        summary = messages[self.summary_index] if self.summary_index is not None else None
        limit = max(200, self.settings.max_observation_chars // 4)
        for m in messages[2:]:  # the system prompt and the task stay whole
            if m is not summary and isinstance(m.get("content"), str):
                m["content"] = cut_middle(m["content"], limit)
        return folded


def _first_line(text: str, limit: int = 120) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit] + "…"


def _summary_lines(messages: list[dict]) -> list[str]:
    """One line per call (name, arguments, first line of its result) and per other message."""
    results = {m.get("tool_call_id"): m.get("content") or "" for m in messages if m["role"] == "tool"}
    lines = []
    for m in messages:
        if m["role"] == "assistant":
            if m.get("content"):
                lines.append(f"- you wrote: {_first_line(m['content'])}")
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                args = fn["arguments"] if len(fn["arguments"]) <= 120 else fn["arguments"][:120] + "…"
                lines.append(f"- {fn['name']}({args}) -> {_first_line(results.get(call['id'], '(no result)'))}")
        elif m["role"] == "user":
            lines.append(f"- told: {_first_line(m.get('content') or '')}")
    return lines
