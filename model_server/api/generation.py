"""One request's run through the engine, as text: detokenize, apply stop strings, free the slot.

The engine yields token ids; this layer turns them into text deltas, ends the request at the first
stop string (truncating there and aborting the engine request so its slot is freed at once), drops EOS
and ChatML control tokens from the text, and aborts the engine request whenever the consumer stops
early (client disconnect, error).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import AsyncIterator, Iterable

from .detokenizer import IncrementalDetokenizer, StopStringMatcher
from .errors import BadRequest, Overloaded, Unavailable


@dataclass
class TextDelta:
    text: str
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def engine_errors():
    """The engine's request errors (imported lazily: the engine package loads torch)."""
    from loopcoder.model_server.engine.types import EngineOverloaded, RequestTooLong

    return EngineOverloaded, RequestTooLong


class TextGeneration:
    """Async iterator of TextDelta for one request; ``start()`` surfaces engine refusals as API errors.

    Call ``start()`` before sending response headers so a full queue (429) or an over-long prompt (400)
    becomes the HTTP status, then iterate. ``close()`` (also run when iteration ends) aborts the
    engine request unless it already finished.
    """

    def __init__(self, engine, prompt_ids: list[int], params, request_id: str, stop: Iterable[str],
                 hidden_ids: Iterable[int]):
        self.engine = engine
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.detok = IncrementalDetokenizer(engine.tokenizer, prompt_ids, hidden_ids)
        self.stops = StopStringMatcher(list(stop))
        self.events = None
        self.first = None
        self.done = False
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0

    async def start(self) -> None:
        overloaded, too_long = engine_errors()
        try:
            events = self.engine.generate(self.prompt_ids, self.params, self.request_id)
            if inspect.isawaitable(events):
                events = await events
            self.events = events.__aiter__()
            self.first = await self.events.__anext__()
        except overloaded as exc:
            self.done = True
            raise Overloaded(f"the server is busy ({exc}); retry later", headers={"Retry-After": "1"}) from None
        except (too_long, ValueError) as exc:  # prompt too long, empty, or ids outside the vocabulary
            self.done = True
            raise BadRequest(str(exc)) from None
        except StopAsyncIteration:
            self.done = True
            raise Unavailable("the engine ended the request without an answer") from None

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        if self.events is None:
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
            yield TextDelta("", True, "abort", self.prompt_tokens, self.completion_tokens)
        finally:
            await self.close()

    def _step(self, event) -> TextDelta | None:
        self.prompt_tokens, self.completion_tokens = event.prompt_tokens, event.completion_tokens
        text = self.stops.push(self.detok.push(event.token_ids))
        if self.stops.stopped:
            self.done = True
            self.engine.abort(self.request_id)  # a stop string: free the slot now
            return TextDelta(text, True, "stop", self.prompt_tokens, self.completion_tokens)
        if event.finished:
            self.done = True
            text += self.stops.push(self.detok.flush())
            reason = "stop" if self.stops.stopped else event.finish_reason
            text += self.stops.flush()
            return TextDelta(text, True, reason, self.prompt_tokens, self.completion_tokens)
        return TextDelta(text, False, None, self.prompt_tokens, self.completion_tokens) if text else None

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
