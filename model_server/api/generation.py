"""One request's run through the engine, as text: detokenize, apply stop strings, free the slot.

The engine yields token ids; this layer turns them into text deltas, ends the request at the first
stop string (truncating there and aborting the engine request so its slot is freed at once), drops EOS
and ChatML control tokens from the text, and aborts the engine request whenever the consumer stops
early (client disconnect, error).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterable, Optional

from .detokenizer import IncrementalDetokenizer, StopStringMatcher
from .errors import BadRequest, ContextLengthExceeded, Overloaded, Unavailable


@dataclass
class TextDelta:
    text: str
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    logprobs: list = field(default_factory=list)  # TokenLogprob of the visible tokens behind ``text``
    cached_tokens: int = 0  # prompt tokens the engine took from its prefix cache


def engine_errors():
    """The engine's request errors (imported lazily: the engine package loads torch)."""
    from loopcoder.model_server.engine.types import EngineOverloaded, GrammarError, RequestTooLong

    return EngineOverloaded, RequestTooLong, GrammarError


def api_error(exc: Exception, prompt_param: str = "messages", grammar_param: Optional[str] = None) -> Exception:
    """The API error for an engine refusal at submit time (the exception itself if it is none)."""
    overloaded, too_long, grammar_error = engine_errors()
    if isinstance(exc, overloaded):
        return Overloaded(f"the server is busy ({exc}); retry later", headers={"Retry-After": "1"})
    if isinstance(exc, too_long):
        return ContextLengthExceeded(exc.max_model_len, exc.prompt_tokens, 1, prompt_param)
    if isinstance(exc, grammar_error):
        return BadRequest(str(exc), param=grammar_param)
    if isinstance(exc, ValueError):  # empty prompt, ids outside the vocabulary
        return BadRequest(str(exc), param=prompt_param)
    return exc


class TextGeneration:
    """Async iterator of TextDelta for one request; ``start()`` surfaces engine refusals as API errors.

    Call ``start()`` before sending response headers so a full queue (429) or an over-long prompt (400)
    becomes the HTTP status, then iterate. ``close()`` (also run when iteration ends) aborts the
    engine request unless it already finished.
    """

    def __init__(self, engine, prompt_ids: list[int], params, request_id: str, stop: Iterable[str],
                 hidden_ids: Iterable[int], events=None, prompt_param: str = "messages",
                 grammar_param: Optional[str] = None):
        self.engine = engine
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.detok = IncrementalDetokenizer(engine.tokenizer, prompt_ids, hidden_ids)
        self.stops = StopStringMatcher(list(stop))
        self.hidden = set(hidden_ids)
        self.events = events  # an engine stream already submitted (n > 1), else submitted by start()
        self.prompt_param, self.grammar_param = prompt_param, grammar_param
        self.first = None
        self.done = False
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.pending_logprobs: list = []

    async def start(self) -> None:
        try:
            if self.events is None:
                events = self.engine.generate(self.prompt_ids, self.params, self.request_id)
                if inspect.isawaitable(events):
                    events = await events
                self.events = events.__aiter__()
            self.first = await self.events.__anext__()
        except StopAsyncIteration:
            self.done = True
            raise Unavailable("the engine ended the request without an answer") from None
        except Exception as exc:
            error = api_error(exc, self.prompt_param, self.grammar_param)
            if error is exc:
                raise
            self.done = True
            raise error from None

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        if self.first is None and not self.done:
            await self.start()
        try:
            event, self.first = self.first, None
            while True:
                delta = self._step(event)
                if delta is not None:
                    yield delta
                if self.done:
                    return
                event = await self.events.__anext__()
        except StopAsyncIteration:
            self.done = True
            yield TextDelta("", True, "abort", self.prompt_tokens, self.completion_tokens, [], self.cached_tokens)
        finally:
            await self.close()

    def _step(self, event) -> TextDelta | None:
        self.prompt_tokens, self.completion_tokens = event.prompt_tokens, event.completion_tokens
        self.cached_tokens = getattr(event, "cached_tokens", 0) or 0
        # Logprobs of the tokens that make text: EOS and hidden control tokens have none (as in OpenAI).
        self.pending_logprobs += [lp for lp in (getattr(event, "logprobs", None) or [])
                                  if lp.token_id not in self.hidden]
        text = self.stops.push(self.detok.push(event.token_ids))
        if self.stops.stopped:
            self.done = True
            self.engine.abort(self.request_id)  # a stop string: free the slot now
            return self._delta(text, True, "stop")
        if event.finished:
            self.done = True
            text += self.stops.push(self.detok.flush())
            reason = "stop" if self.stops.stopped else event.finish_reason
            text += self.stops.flush()
            return self._delta(text, True, reason)
        return self._delta(text, False, None) if text else None

    def _delta(self, text: str, finished: bool, reason: str | None) -> TextDelta:
        logprobs, self.pending_logprobs = self.pending_logprobs, []
        return TextDelta(text, finished, reason, self.prompt_tokens, self.completion_tokens, logprobs,
                         self.cached_tokens)

    async def close(self) -> None:
        """Abort the engine request if it is still running and close the engine's iterator."""
        if not self.done:
            self.done = True
            self.engine.abort(self.request_id)
        events, self.events = self.events, None
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                pass
