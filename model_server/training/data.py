"""Training samples: a chat request body and the assistant message that answered it, as token ids.

The prompt is rendered by the server's own ``render_chat`` (same template, tools, ``enable_thinking``,
tool_choice prefill), so the model trains on exactly the tokens it will be served. The answer is the
text the model must write after that prompt: the assistant message as the chat template renders it
(reasoning in ``<think>``, tool calls in ``<tool_call>`` blocks), from where the generation prompt ends,
through ``<|im_end|>``. The loss covers those answer tokens only. ``answer_text`` checks that the
server's own output parser reads the text back into the same message.

A sample file is JSONL, one ``{"request": <chat completion body>, "answer": <assistant message>}`` per
line (``loopcoder train`` writes them from agent trajectories).

Edit emphasis (``loopcoder train --edit-weight``): in an episode's final ``str_replace`` answer, the few
tokens that write what ``new_str`` changes against ``old_str`` decide whether the edit fixes anything; the
rest copies the viewed code. Those tokens can carry a larger weight in the loss (``changed_spans``,
``final_edits``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..api.errors import BadRequest
from ..api.output_parsers import ChatOutputParser
from ..api.prompts import forced_prefill, render_chat, template_messages
from ..api.protocol import ChatCompletionRequest
from ..errors import ModelError

# Stands in for an empty reasoning while rendering, so that the template writes its think block; removed after.
_PLACEHOLDER = "\x00reasoning\x00"


class SampleError(ModelError):
    """A sample cannot be rendered for training; the message says which and why."""


@dataclass
class Encoded:
    """One sample as token ids: the prompt, then the answer (the tokens the loss covers)."""

    prompt_ids: list[int]
    answer_ids: list[int]
    answer_weights: Optional[list[float]] = None  # per answer token; None: all 1

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


def read_samples(path: str | Path) -> list[dict]:
    """The samples of one JSONL file (gzipped when its name ends in .gz); a bad line is a SampleError naming it."""
    import gzip

    path = Path(path)
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text(encoding="utf-8")
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SampleError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(sample, dict) or not isinstance(sample.get("request"), dict) \
                or not isinstance(sample.get("answer"), dict):
            raise SampleError(f"{path}:{number}: a sample needs a 'request' object and an 'answer' object")
        out.append(sample)
    return out


def answer_text(tokenizer, request: ChatCompletionRequest, prompt_text: str, answer: dict) -> str:
    """What the model writes after ``prompt_text`` to give ``answer``, ending with the end-of-turn token."""
    eos = tokenizer.eos_token
    base_kwargs = {k: v for k, v in (request.chat_template_kwargs or {}).items()}
    thinking = request.thinking()
    if thinking is not None:
        base_kwargs["enable_thinking"] = thinking
    offer_tools, _ = forced_prefill(request)  # as render_chat decides it (tool_choice "none": no tools)
    tools = [t.model_dump(exclude_none=True) for t in request.tools] if offer_tools else None
    messages = template_messages(request)
    message = {"role": "assistant", "content": answer.get("content")}
    if answer.get("tool_calls"):
        message["tool_calls"] = answer["tool_calls"]
    message["reasoning_content"] = answer.get("reasoning_content") or _PLACEHOLDER

    def render(msgs):
        return tokenizer.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=False,
                                             **base_kwargs)

    before = render(messages)
    block = render(messages + [message])
    if not block.startswith(before):
        raise SampleError("the chat template renders the history differently once the answer follows it")
    block = block[len(before):]
    generation = prompt_text[len(before):] if prompt_text.startswith(before) else None
    if generation is None:
        raise SampleError("the prompt does not start with the rendered history")
    if _PLACEHOLDER in block:
        block = block.replace(_PLACEHOLDER, "")
    if not block.startswith(generation):
        raise SampleError("the rendered answer does not continue the generation prompt "
                          f"({generation!r} vs {block[:len(generation)]!r})")
    text = block[len(generation):]
    end = text.rfind(eos)
    if end < 0:
        raise SampleError(f"the rendered answer has no end-of-turn token {eos!r}")
    return text[:end + len(eos)]


def encode_sample(tokenizer, sample: dict, check_parse: bool = True, edit_weight: float = 1.0) -> Encoded:
    """Token ids of one sample, the prompt exactly as the server renders the request.

    ``edit_weight`` != 1: the answer tokens that write a ``str_replace`` change (``changed_spans``) get that
    weight in the loss, the others 1."""
    try:
        request = ChatCompletionRequest.model_validate(sample["request"])
        prompt = render_chat(tokenizer, request)
    except BadRequest as exc:
        raise SampleError(f"the server would refuse this request: {exc}") from None
    except ValueError as exc:  # pydantic
        raise SampleError(f"not a chat completion request: {str(exc).splitlines()[0]}") from None
    answer = sample["answer"]
    if prompt.prefill:
        raise SampleError("requests with a forced tool call (tool_choice) are not supported as samples")
    text = answer_text(tokenizer, request, prompt.text, answer)
    if check_parse:
        _check_parses_back(text, prompt, answer, tokenizer.eos_token)
    if edit_weight == 1.0:
        answer_ids = tokenizer(text, add_special_tokens=False).input_ids
        return Encoded(list(prompt.token_ids), list(answer_ids))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = changed_spans(text, answer)
    weights = [edit_weight if any(a < end and b > start for start, end in spans) else 1.0
               for a, b in encoded.offset_mapping]
    return Encoded(list(prompt.token_ids), list(encoded.input_ids), weights)


def changed_spans(text: str, answer: dict) -> list[tuple[int, int]]:
    """Character spans of ``text`` (an answer as rendered) that write what each ``str_replace`` call of
    ``answer`` changes: the part of ``new_str`` between the prefix and the suffix it shares with
    ``old_str``; for a pure deletion, the one character after the shared prefix (where the copy must stop).
    A call whose ``new_str`` is not found as JSON in ``text`` gives no span."""
    spans: list[tuple[int, int]] = []
    searched = 0
    for call in answer.get("tool_calls") or []:
        if call["function"]["name"] != "str_replace":
            continue
        try:
            args = json.loads(call["function"]["arguments"] or "{}")
        except json.JSONDecodeError:
            continue
        old, new = args.get("old_str"), args.get("new_str")
        if not isinstance(old, str) or not isinstance(new, str) or old == new:
            continue
        prefix = 0
        while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
            prefix += 1
        suffix = 0
        while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
            suffix += 1
        for ascii_only in (False, True):
            dump = lambda v: json.dumps(v, ensure_ascii=ascii_only)  # noqa: E731
            at = text.find('"new_str": ' + dump(new), searched)
            if at < 0:
                continue
            start = at + len('"new_str": ') + len(dump(new[:prefix])) - 1  # after the opening quote + prefix
            end = start + len(dump(new[prefix:len(new) - suffix])) - 2
            spans.append((start, max(end, start + 1)))
            searched = at + 1
            break
    return spans


def final_edits(samples: list[dict]) -> list[int]:
    """Indices of each episode's last ``str_replace`` answer that no ``undo`` follows (episodes: the samples'
    ``source.file``, in ``source.step`` order; samples without a source are in no episode). Teacher episodes
    are kept only when they resolve, so that edit is the fix; deliberate wrong first edits are not in it."""
    by_episode: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        source = s.get("source") or {}
        if "file" in source and "step" in source:
            by_episode.setdefault(source["file"], []).append(i)
    picked = []
    for indices in by_episode.values():
        last = None
        for i in sorted(indices, key=lambda i: samples[i]["source"]["step"]):
            names = [c["function"]["name"] for c in samples[i]["answer"].get("tool_calls") or []]
            if "str_replace" in names:
                last = i
            if "undo" in names:
                last = None
        if last is not None:
            picked.append(last)
    return sorted(picked)


def _check_parses_back(text: str, prompt, answer: dict, eos: str) -> None:
    """The server's parser must read ``text`` back into the answer's calls and reasoning."""
    parser = ChatOutputParser(prompt.starts_in_think, prompt.parse_tools, prompt.max_calls)
    reasoning, content, calls = parser.parse(text[:-len(eos)])
    want = [(c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"))
            for c in answer.get("tool_calls") or []]
    got = [(c.name, json.loads(c.arguments)) for c in calls]
    if got != want:
        raise SampleError(f"the rendered answer parses into calls {got}, not {want}")
    if (answer.get("reasoning_content") or "").strip() != reasoning.strip():
        raise SampleError("the rendered answer's reasoning does not parse back")
    if (answer.get("content") or "").strip() != content.strip():
        raise SampleError("the rendered answer's content does not parse back")
