"""The model: one chat call over any OpenAI-compatible HTTP API (native server, SGLang, vLLM, hosted).

The ``openai`` SDK's own retries are off; tenacity retries here, so every retry is visible (``on_retry``)
and bounded: 429 (waiting what ``Retry-After`` asks, capped), 5xx, timeouts and dropped connections, with
exponential backoff and a cap. A 400 is never retried: a context-overflow 400 raises ``ContextOverflow``
(the agent compacts and tries once more), any other one ``ModelError``.
"""
from __future__ import annotations

import email.utils
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from loopcoder.agent.config import ModelSettings


class ModelError(Exception):
    """The model could not answer; ``stop_reason`` is what the episode records."""

    stop_reason = "model_error"


class ContextOverflow(ModelError):
    """The server refused the prompt as longer than its context."""

    stop_reason = "context_exceeded"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ModelResponse:
    """One assistant answer. ``tool_calls`` are OpenAI-shaped dicts (``id``, ``type``, ``function``)."""

    content: Optional[str]
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reasoning: Optional[str] = None
    usage: Usage = field(default_factory=Usage)
    finish_reason: Optional[str] = None
    latency_s: float = 0.0


class Model(Protocol):
    """What the agent needs from a model: a name, its context length if known, and chat.

    ``on_retry`` is set by the agent, which records each retry in the trajectory.
    """

    name: str
    on_retry: Optional["RetryHook"]

    def max_model_len(self) -> Optional[int]: ...

    def chat(self, messages: list[dict], tools: list[dict], thinking: Optional[bool],
             max_tokens: int) -> ModelResponse: ...


RetryHook = Callable[[int, str, float], None]  # (attempt that failed, error, seconds before the next)

# How servers word a prompt longer than the context: native, vLLM, SGLang, OpenAI.
_OVERFLOW = re.compile(r"context_length_exceeded|maximum context length|model's context|context length|"
                       r"context window|longer than the model", re.IGNORECASE)


def is_context_overflow(status: int, message: str) -> bool:
    return status == 400 and bool(_OVERFLOW.search(message))


def chat_body(name: str, settings: ModelSettings, messages: list[dict], tools: list[dict],
              thinking: Optional[bool], max_tokens: int) -> dict[str, Any]:
    """The JSON body of one chat request, as the agent sends it."""
    body: dict[str, Any] = dict(model=name, messages=messages, max_tokens=max_tokens,
                                temperature=settings.temperature)
    if tools:
        body["tools"] = tools
    if settings.seed is not None:
        body["seed"] = settings.seed
    if settings.frequency_penalty:
        body["frequency_penalty"] = settings.frequency_penalty
    if thinking is not None:
        body["chat_template_kwargs"] = {"enable_thinking": thinking}
    return body


class ModelClient:
    """A ``Model`` over HTTP. The model name, when not configured, is the first one ``/v1/models`` lists."""

    def __init__(self, settings: ModelSettings, on_retry: Optional[RetryHook] = None):
        import openai

        if not settings.url:
            raise ModelError("no model URL: set model.url (or pass --model-url)")
        self.settings = settings
        self.url = settings.url
        self.on_retry = on_retry
        self._client = openai.OpenAI(base_url=settings.url, api_key=settings.api_key(), max_retries=0,
                                     timeout=settings.timeout_s)
        self._models: Optional[list[Any]] = None
        self.name = settings.name or self._served_models()[0].id

    def _served_models(self) -> list[Any]:
        if self._models is None:
            models = self._with_retries(lambda: self._client.models.list().data)
            if not models:
                raise ModelError(f"{self.settings.url}/models lists no model")
            self._models = list(models)
        return self._models

    def max_model_len(self) -> Optional[int]:
        """``max_model_len`` of the served model as /v1/models reports it (native, vLLM, SGLang), or None."""
        try:
            models = self._served_models()
        except ModelError:
            return None
        for m in models:
            if m.id == self.name:
                value = getattr(m, "max_model_len", None) or (m.model_extra or {}).get("max_model_len")
                return int(value) if value else None
        return None

    def chat(self, messages: list[dict], tools: list[dict], thinking: Optional[bool],
             max_tokens: int) -> ModelResponse:
        from openai.types.chat import ChatCompletion

        body = chat_body(self.name, self.settings, messages, tools, thinking, max_tokens)
        start = time.monotonic()
        # client.post (the SDK's documented way to send a body as is) rather than chat.completions.create:
        # create() walks every message and schema against its typed dicts, ~50-100 ms per call on a long
        # history here, for a body that is already plain JSON. Errors, timeouts and parsing are the same.
        out = self._with_retries(lambda: self._client.post("/chat/completions", body=body, cast_to=ChatCompletion))
        latency = time.monotonic() - start
        if not out.choices:
            raise ModelError("the server answered with no choices")
        choice = out.choices[0]
        msg = choice.message
        extra = msg.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")  # vLLM's newer name
        usage = Usage(out.usage.prompt_tokens or 0, out.usage.completion_tokens or 0) if out.usage else Usage()
        return ModelResponse(content=msg.content, tool_calls=[tc.model_dump() for tc in msg.tool_calls or []],
                             reasoning=reasoning, usage=usage, finish_reason=choice.finish_reason,
                             latency_s=latency)

    def _with_retries(self, call: Callable[[], Any]) -> Any:
        import openai
        import tenacity

        s = self.settings

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception()
            asked = _retry_after(exc)
            if asked is not None:
                return min(asked, s.backoff_max_s)
            return min(s.backoff_max_s, s.backoff_initial_s * 2 ** (state.attempt_number - 1)) * random.uniform(0.5, 1)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if self.on_retry:
                self.on_retry(state.attempt_number, _describe(state.outcome.exception()),
                              state.next_action.sleep if state.next_action else 0.0)

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception(_retryable), wait=wait,
                                     stop=tenacity.stop_after_attempt(s.max_attempts), before_sleep=before_sleep,
                                     reraise=True)
        try:
            return retrying(call)
        except openai.APIStatusError as exc:
            message = _message(exc)
            if is_context_overflow(exc.status_code, message):
                raise ContextOverflow(message) from None
            raise ModelError(f"HTTP {exc.status_code} from the model server: {message}") from None
        except openai.OpenAIError as exc:  # connection errors, timeouts, bad response bodies
            raise ModelError(f"model server: {_describe(exc)}") from None


def _retryable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)  # includes APITimeoutError


def _retry_after(exc: BaseException | None) -> Optional[float]:
    """Seconds a 429/503 asks the client to wait (``Retry-After``: seconds or an HTTP date), or None."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(body.get("message"), str):
            return body["message"]
    return str(getattr(exc, "message", exc))


def _describe(exc: BaseException | None) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_message(exc)}"[:300]
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:300]
