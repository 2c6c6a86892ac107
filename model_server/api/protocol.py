"""OpenAI-compatible request and response bodies (the subset LoopCoder serves, plus a few vLLM extras).

Requests accept and ignore fields we do not use (clients send many), and an explicit ``null`` means
the field's default wherever OpenAI accepts one. Values we cannot honour are refused by ``check_supported``
with a 400 naming the field (``param``), never silently ignored.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import BadRequest


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        # OpenAI clients send explicit nulls (stream, n, parallel_tool_calls, ...) for "not set".
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# -- chat ---------------------------------------------------------------------------------------------

class FunctionCall(_Request):
    name: str
    arguments: Union[str, dict[str, Any]] = "{}"


class ToolCall(_Request):
    id: str = Field(default_factory=lambda: random_id("call"))
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[dict[str, Any]], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None
    reasoning_content: Optional[str] = None
    function_call: Optional[FunctionCall] = None  # legacy assistant message


class FunctionDefinition(_Request):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class ToolDefinition(_Request):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedToolChoiceFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"] = "function"
    function: NamedToolChoiceFunction


class StreamOptions(_Request):
    include_usage: bool = False


class JSONSchemaSpec(_Request):
    name: str = "response"
    description: Optional[str] = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaSpec] = None


class _SamplingFields(_Request):
    model: str
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    top_k: Optional[int] = Field(None, ge=0)
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stop_token_ids: Optional[list[int]] = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, ge=1, le=128)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)  # vLLM extra
    logit_bias: Optional[dict[str, float]] = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def check_supported(self) -> None:
        """Refuse (400, naming the field) values this server cannot honour."""
        if len(self.stop_strings()) > 16:
            raise BadRequest("at most 16 stop strings are allowed", param="stop")
        self.logit_bias_ids()

    def logit_bias_ids(self) -> dict[int, float]:
        """logit_bias with int token ids; 400 for keys that are not ids or values outside [-100, 100]."""
        out: dict[int, float] = {}
        for key, value in (self.logit_bias or {}).items():
            try:
                token = int(key)
            except ValueError:
                raise BadRequest(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
            if token < 0:
                raise BadRequest(f"logit_bias token id {token} is negative", param="logit_bias")
            if not -100 <= value <= 100:
                raise BadRequest(f"logit_bias values must lie in [-100, 100], got {value}", param="logit_bias")
            out[token] = value
        return out

    def logprob_count(self) -> Optional[int]:
        """How many alternatives to report per token (0: only the chosen one), None for no logprobs."""
        return None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    tools: Optional[list[ToolDefinition]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: bool = True
    functions: Optional[list[FunctionDefinition]] = None  # legacy form of tools
    function_call: Union[Literal["none", "auto"], NamedToolChoiceFunction, None] = None  # legacy tool_choice
    chat_template_kwargs: Optional[dict[str, Any]] = None
    response_format: Optional[ResponseFormat] = None
    reasoning_effort: Optional[Literal["none", "minimal", "low", "medium", "high", "xhigh"]] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)

    def check_supported(self) -> None:
        super().check_supported()
        if self.top_logprobs and not self.logprobs:
            raise BadRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is None:
            raise BadRequest("response_format of type json_schema needs a json_schema object",
                             param="response_format.json_schema")
        if self.functions is not None and self.tools is not None:
            raise BadRequest("send tools or the legacy functions, not both", param="functions")
        if self.function_call is not None and self.functions is None:
            raise BadRequest("function_call requires functions", param="function_call")

    def logprob_count(self) -> Optional[int]:
        return (self.top_logprobs or 0) if self.logprobs else None

    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    @property
    def legacy_functions(self) -> bool:
        """The request used ``functions``: answer with ``function_call``, as OpenAI does."""
        return self.functions is not None

    def with_tools(self) -> "ChatCompletionRequest":
        """The request with legacy ``functions``/``function_call`` (and function messages) as tools."""
        if not self.legacy_functions and not any(m.role == "function" or m.function_call for m in self.messages):
            return self
        messages, last_id = [], None
        for i, m in enumerate(self.messages):
            if m.role == "assistant" and m.function_call is not None:
                last_id = f"call_legacy_{i}"
                calls = list(m.tool_calls or []) + [ToolCall(id=last_id, function=m.function_call)]
                m = m.model_copy(update={"tool_calls": calls, "function_call": None})
            elif m.role == "function":
                m = m.model_copy(update={"role": "tool", "tool_call_id": last_id})
            messages.append(m)
        update: dict[str, Any] = {"messages": messages}
        if self.legacy_functions:
            choice = self.function_call
            update.update(tools=[ToolDefinition(function=f) for f in self.functions], functions=None,
                          function_call=None, parallel_tool_calls=False,
                          tool_choice=NamedToolChoice(function=choice) if isinstance(choice, BaseModel) else choice)
        return self.model_copy(update=update)

    def thinking(self) -> Optional[bool]:
        """enable_thinking as the request asks for it (chat_template_kwargs wins over reasoning_effort)."""
        kwargs = self.chat_template_kwargs or {}
        if "enable_thinking" in kwargs:
            return bool(kwargs["enable_thinking"])
        if self.reasoning_effort is not None:
            return self.reasoning_effort not in ("none", "minimal")
        return None


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache, not computed (as OpenAI reports)


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: dict[str, str]


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    reasoning_content: Optional[str] = None
    tool_calls: Optional[list[ToolCallOut]] = None
    function_call: Optional[dict[str, str]] = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: Optional[str]
    logprobs: Optional[dict[str, Any]] = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: random_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


# -- completions ----------------------------------------------------------------------------------------

class CompletionRequest(_SamplingFields):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None
    logprobs: Optional[int] = Field(None, ge=0, le=20)

    def check_supported(self) -> None:
        super().check_supported()
        if self.best_of not in (None, 1, self.n):
            raise BadRequest("best_of must equal n: this server returns every choice it samples", param="best_of")
        if self.suffix is not None and self.echo:
            raise BadRequest("echo cannot be combined with suffix", param="echo")
        if self.echo and self.logprobs is not None:
            raise BadRequest("echo with logprobs needs prompt logprobs, which this server does not compute",
                             param="echo")

    def logprob_count(self) -> Optional[int]:
        return self.logprobs

    def token_limit(self) -> Optional[int]:
        # The legacy endpoint's documented default is 16 tokens.
        return self.max_tokens if self.max_tokens is not None else 16


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Optional[str]
    logprobs: Optional[dict[str, Any]] = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: random_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Optional[UsageInfo] = None


# -- models ------------------------------------------------------------------------------------------------

class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "loopcoder"
    max_model_len: Optional[int] = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
