"""Requests to prompt token ids: the checkpoint's chat template (tools, thinking) or a raw/FIM prompt.

``tool_choice``: "none" leaves the tools out of the prompt, "auto" lets the model decide, and
"required" or a named function prefill the assistant turn with the opening of a ``<tool_call>`` block
(for a named function, up to its arguments); ``structured.py`` then constrains the rest of the call
with a grammar so that it always parses. The prefill is part of the prompt and is also fed to the
output parser, which sees the complete block. In thinking mode a forced call closes the think block
first (no reasoning). ``reasoning_effort`` turns thinking on (off for "none" and "minimal") unless
``chat_template_kwargs`` sets ``enable_thinking`` itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import BadRequest
from .output_parsers import THINK_END, THINK_START, TOOL_START
from .protocol import ChatCompletionRequest, ChatMessage, CompletionRequest

# chat_template_kwargs a client may not set: the server sets them itself.
RESERVED_TEMPLATE_KWARGS = {"messages", "conversation", "tools", "documents", "add_generation_prompt",
                            "continue_final_message", "tokenize", "return_dict", "chat_template"}


@dataclass
class ChatPrompt:
    """A rendered chat prompt and how to read the model's answer to it."""

    text: str                # the prompt as the model sees it (prefill included)
    token_ids: list[int]
    prefill: str             # assistant text the server wrote for the model (forced tool call)
    starts_in_think: bool    # the answer starts inside an open <think> block
    parse_tools: bool        # tools were offered: parse <tool_call> blocks
    max_calls: int | None    # 1 when parallel_tool_calls is false
    forced: str | None = None  # "required" or "named": the prefill opened a tool call
    # leading tokens the conversation's next prompt will share: the history without the generation prompt
    # (render_chat(history=True); 0: not computed)
    history_tokens: int = 0


def message_text(message: ChatMessage, index: int) -> str | None:
    """The text of a message; content parts must all be text."""
    content = message.content
    if content is None or isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise BadRequest(f"messages[{index}]: only text content parts are supported, got "
                             f"{part.get('type')!r}", param=f"messages[{index}].content")
        texts.append(part["text"])
    return "".join(texts)


def template_messages(request: ChatCompletionRequest) -> list[dict]:
    """Messages as the chat template reads them (developer becomes system; tool_calls as dicts)."""
    out = []
    for i, m in enumerate(request.messages):
        text = message_text(m, i)
        if m.role in ("user", "system", "developer", "tool") and text is None:
            raise BadRequest(f"messages[{i}]: a {m.role} message needs content", param=f"messages[{i}].content")
        msg = {"role": "system" if m.role == "developer" else m.role, "content": text}
        if m.name:
            msg["name"] = m.name
        if m.role == "assistant":
            if m.reasoning_content:
                msg["reasoning_content"] = m.reasoning_content
            if m.tool_calls:
                msg["tool_calls"] = [c.model_dump() for c in m.tool_calls]
        if m.role == "tool" and m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


def forced_prefill(request: ChatCompletionRequest) -> tuple[bool, str]:
    """(offer the tools?, assistant prefill) for the request's tools and tool_choice."""
    choice = request.tool_choice
    if not request.tools:
        if choice not in (None, "none", "auto"):
            raise BadRequest("tool_choice requires tools", param="tool_choice")
        return False, ""
    if choice == "none":
        return False, ""
    if choice is None or choice == "auto":
        return True, ""
    if choice == "required":
        return True, TOOL_START + "\n"
    names = [t.function.name for t in request.tools]
    if choice.function.name not in names:
        raise BadRequest(f"tool_choice names function {choice.function.name!r}, which is not in tools "
                         f"({', '.join(names)})", param="tool_choice")
    return True, TOOL_START + "\n" + '{"name": ' + json.dumps(choice.function.name) + ', "arguments": '


def render_chat(tokenizer, request: ChatCompletionRequest, history: bool = False) -> ChatPrompt:
    """Render a chat request with the checkpoint's chat template and tokenize it.

    ``history``: also find ``history_tokens``, the prompt's leading tokens that render the messages alone
    (no generation prompt). An agent's next request re-sends those messages and appends the answer, so
    its prompt shares them, while the generation prompt (``<|im_start|>assistant``, an empty think block)
    is not re-sent as it was: the engine keeps the loop state there (``SamplingParams.snapshot_at``)."""
    if not getattr(tokenizer, "chat_template", None):
        raise BadRequest("this model has no chat template: use /v1/completions with a raw prompt", param="messages")
    kwargs = dict(request.chat_template_kwargs or {})
    bad = sorted(RESERVED_TEMPLATE_KWARGS & kwargs.keys())
    if bad:
        raise BadRequest(f"chat_template_kwargs may not set {', '.join(bad)}", param="chat_template_kwargs")
    thinking = request.thinking()
    if thinking is not None:
        kwargs["enable_thinking"] = thinking
    offer_tools, prefill = forced_prefill(request)
    tools = [t.model_dump(exclude_none=True) for t in request.tools] if offer_tools else None
    try:
        text = tokenizer.apply_chat_template(template_messages(request), tools=tools, tokenize=False,
                                             add_generation_prompt=True, **kwargs)
    except BadRequest:
        raise
    except Exception as exc:  # jinja2 errors (raise_exception in templates), bad kwargs
        raise BadRequest(f"the chat template could not render these messages: {exc}", param="messages") from None
    starts_in_think = text.rstrip().endswith(THINK_START)
    if prefill and starts_in_think:
        prefill = THINK_END + "\n\n" + prefill
    text += prefill
    ids = tokenizer(text, add_special_tokens=False).input_ids
    forced = None if not prefill else "required" if request.tool_choice == "required" else "named"
    shared = 0
    if history:
        past = tokenizer.apply_chat_template(template_messages(request), tools=tools, tokenize=False,
                                             add_generation_prompt=False, **kwargs)
        # usually the prompt is the history plus a generation prompt that starts with a special token:
        # tokenizing that short rest is enough; otherwise the two token lists are compared
        rest = tokenizer(text[len(past):], add_special_tokens=False).input_ids if text.startswith(past) else None
        if rest and len(rest) < len(ids) and ids[len(ids) - len(rest):] == rest:
            shared = len(ids) - len(rest)
        else:
            past_ids = tokenizer(past, add_special_tokens=False).input_ids
            while shared < min(len(past_ids), len(ids)) and past_ids[shared] == ids[shared]:
                shared += 1
    return ChatPrompt(text, ids, prefill, starts_in_think, offer_tools,
                      None if request.parallel_tool_calls else 1, forced, shared)


def completion_prompts(tokenizer, request: CompletionRequest) -> list[tuple[list[int], str]]:
    """(token ids, prompt text for echo) of each prompt of a /v1/completions request: one text or
    token-id prompt, or a list of them (a batch: choices are numbered prompt by prompt)."""
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if any(not isinstance(p, type(prompt[0])) for p in prompt):
            raise BadRequest("a batch of prompts must be all strings or all token-id lists", param="prompt")
        return [_one_prompt(tokenizer, request, p, f"prompt[{i}]") for i, p in enumerate(prompt)]
    return [_one_prompt(tokenizer, request, prompt, "prompt")]


def completion_prompt_ids(tokenizer, request: CompletionRequest) -> tuple[list[int], str]:
    """(token ids, prompt text for echo) of a request with exactly one prompt."""
    prompts = completion_prompts(tokenizer, request)
    if len(prompts) != 1:
        raise BadRequest(f"expected one prompt, got {len(prompts)}", param="prompt")
    return prompts[0]


def _one_prompt(tokenizer, request: CompletionRequest, prompt, param: str) -> tuple[list[int], str]:
    """With ``suffix`` the prompt becomes a fill-in-the-middle prompt in the checkpoint's FIM tokens."""
    if isinstance(prompt, list):
        if not prompt:
            raise BadRequest(f"{param} is empty", param=param)
        vocab = len(tokenizer)
        if any(not isinstance(t, int) or t < 0 or t >= vocab for t in prompt):
            raise BadRequest(f"prompt token ids must lie in [0, {vocab})", param=param)
        if request.suffix is not None:
            raise BadRequest("suffix needs a text prompt", param="suffix")
        return list(prompt), tokenizer.decode(prompt)
    if request.suffix is not None:
        vocab = tokenizer.get_vocab()
        fim = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
        if not all(t in vocab for t in fim):
            raise BadRequest("suffix (fill-in-the-middle) needs a tokenizer with FIM tokens", param="suffix")
        text = f"{fim[0]}{prompt}{fim[1]}{request.suffix}{fim[2]}"
        return tokenizer(text, add_special_tokens=False).input_ids, prompt
    if not prompt:
        raise BadRequest(f"{param} is empty", param=param)
    return tokenizer(prompt).input_ids, prompt
