"""The OpenAI-compatible HTTP server (FastAPI) in front of the native engine.

Endpoints: POST /v1/chat/completions, POST /v1/completions, POST /v1/responses (each streaming as
server-sent events or not), GET /v1/models, GET /v1/models/{id}, GET /health, GET /metrics. The engine
is duck-typed: anything with the ``AsyncLLMEngine`` surface (``tokenizer``, ``model_name``,
``max_model_len``, ``generate``, ``abort``, ``stats``, ``start``, ``shutdown``; ``generate_many`` for
n > 1) can be served.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Iterable, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dataclasses import dataclass

from .errors import APIError, BadRequest, ContextLengthExceeded, ModelNotFound, Unauthorized
from .generation import TextDelta, TextGeneration, api_error
from .logprobs import TokenTexts, chat_logprobs, completion_logprobs
from .metrics import ServerMetrics
from .output_parsers import ChatOutputParser, ParsedToolCall
from .prompts import ChatPrompt, completion_prompts, render_chat
from .protocol import (ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatMessageOut,
                       CompletionChoice, CompletionRequest, CompletionResponse, ModelCard, ModelList, PromptTokensDetails,
                       ToolCallOut, UsageInfo, random_id)
from .responses import ResponsesRequest, ResponsesServing
from .structured import chat_grammar

log = logging.getLogger("loopcoder.api")


def control_token_ids(tokenizer) -> set[int]:
    """Special tokens hidden from answers: ChatML controls like <|im_start|>, not markup like <think>."""
    candidates = {tid: tok.content for tid, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()
                  if getattr(tok, "special", False)}
    for tid in getattr(tokenizer, "all_special_ids", []):
        candidates.setdefault(tid, tokenizer.convert_ids_to_tokens(tid))
    return {tid for tid, text in candidates.items()
            if isinstance(text, str) and text.startswith("<|") and text.endswith("|>")}


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


@dataclass
class ChatPlan:
    """A validated chat request, rendered, with its sampling settings (grammar included)."""

    req: ChatCompletionRequest  # legacy functions already turned into tools
    prompt: ChatPrompt
    params: object              # engine SamplingParams
    legacy: bool                # answer with function_call (the request used functions)
    grammar_param: str

    def parser(self) -> ChatOutputParser:
        return ChatOutputParser(self.prompt.starts_in_think, self.prompt.parse_tools, self.prompt.max_calls)


class OpenAIServing:
    """Request handling shared by the endpoints: validation, prompts, sampling, parsing, responses."""

    def __init__(self, engine, served_model_name: Optional[str] = None, eos_token_ids: Iterable[int] = (),
                 constrain_tool_calls: str = "forced"):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name = served_model_name or engine.model_name
        self.max_model_len = int(engine.max_model_len)
        self.vocab_size = int(getattr(engine, "vocab_size", None) or len(self.tokenizer))
        self.constrain_tool_calls = constrain_tool_calls
        # The engine already gathered the checkpoint's EOS ids (generation config, config, tokenizer);
        # eos_token_ids adds any the caller wants on top.
        eos = list(eos_token_ids)
        for i in sorted(getattr(engine, "eos_ids", ())):
            if i not in eos:
                eos.append(i)
        tok_eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(tok_eos, int) and tok_eos not in eos:
            eos.append(tok_eos)
        self.eos_ids = eos
        self.control_ids = control_token_ids(self.tokenizer)
        self.token_texts = TokenTexts(self.tokenizer)
        self.metrics = ServerMetrics()
        self.ready = False

    # -- shared steps ------------------------------------------------------------------------------
    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {self.model_name!r}",
                                param="model")

    def sampling(self, req, prompt_len: int, prompt_param: str, grammar=None):
        """SamplingParams for a request, its token limit clamped to the context left after the prompt."""
        from loopcoder.model_server.engine.types import SamplingParams

        limit = req.token_limit()
        room = self.max_model_len - prompt_len
        if room < 1:
            raise ContextLengthExceeded(self.max_model_len, prompt_len, limit or 1, prompt_param)
        bias = req.logit_bias_ids()
        if any(t >= self.vocab_size for t in bias):
            raise BadRequest(f"logit_bias token id {max(bias)} is outside the vocabulary (size {self.vocab_size})",
                             param="logit_bias")
        stop_ids = list(req.stop_token_ids or [])
        if not req.ignore_eos:
            stop_ids += [i for i in self.eos_ids if i not in stop_ids]
        temperature = 1.0 if req.temperature is None else req.temperature
        return SamplingParams(max_tokens=min(limit, room) if limit else room, temperature=temperature,
                              top_p=1.0 if req.top_p is None else req.top_p, top_k=req.top_k or 0,
                              seed=req.seed, stop_token_ids=stop_ids, ignore_eos=req.ignore_eos,
                              presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                              repetition_penalty=req.repetition_penalty, logit_bias=bias,
                              logprobs=req.logprob_count(), grammar=grammar)

    def hidden_ids(self, req) -> set[int]:
        hidden = set(self.eos_ids) | set(req.stop_token_ids or [])
        return hidden | self.control_ids if req.skip_special_tokens else hidden

    async def run_unless_disconnected(self, request: Request, work):
        """Await ``work`` (a coroutine); if the client disconnects first, cancel it (which frees the slot)
        and return None."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(_wait_for_disconnect(request))
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            watcher.cancel()
            raise
        watcher.cancel()
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.metrics.record_disconnect()
        return None

    async def generations(self, prompt_ids: list[int], params, n: int, request_id: str, stops: list[str],
                          hidden: set[int], prompt_param: str, grammar_param: Optional[str]) -> list[TextGeneration]:
        """n generations of one prompt (n > 1: one engine submission whose prefill the choices share)."""
        common = dict(stop=stops, hidden_ids=hidden, prompt_param=prompt_param, grammar_param=grammar_param)
        if n == 1:
            return [TextGeneration(self.engine, prompt_ids, params, request_id, **common)]
        ids = [f"{request_id}-{i}" for i in range(n)]
        try:
            streams = await self.engine.generate_many(prompt_ids, params, ids)
        except Exception as exc:
            raise api_error(exc, prompt_param, grammar_param) from None
        return [TextGeneration(self.engine, prompt_ids, params, rid, events=stream, **common)
                for rid, stream in zip(ids, streams)]

    async def start_all(self, request: Request, gens: list[TextGeneration]) -> bool:
        """Wait for every generation's first token (queueing and prefill); False if the client left
        meanwhile. Engine refusals raise as API errors; every generation is closed on the way out."""
        try:
            started = await self.run_unless_disconnected(request, asyncio.gather(*(g.start() for g in gens)))
        except BaseException:
            await _close_all(gens)
            raise
        if started is None:
            await _close_all(gens)
            return False
        return True

    # -- chat ----------------------------------------------------------------------------------------
    def plan_chat(self, req: ChatCompletionRequest, prompt_param: str = "messages") -> ChatPlan:
        self.check_model(req.model)
        req.check_supported()
        legacy = req.legacy_functions
        req = req.with_tools()
        # where the next turn's prompt will leave this one: only an engine that keeps loop states (R > 1,
        # prefix caching on) uses it
        prompt = render_chat(self.tokenizer, req, history=getattr(self.engine, "keeps_loop_states", False))
        grammar = chat_grammar(req, prompt, self.constrain_tool_calls)
        grammar_param = "response_format" if req.response_format is not None and not prompt.forced else "tools"
        params = self.sampling(req, len(prompt.token_ids), prompt_param, grammar)
        if prompt.history_tokens:
            params = params.model_copy(update={"snapshot_at": prompt.history_tokens})
        return ChatPlan(req, prompt, params, legacy, grammar_param)

    async def chat(self, req: ChatCompletionRequest, request: Request) -> Response:
        arrived = time.monotonic()
        plan = self.plan_chat(req)
        request_id = random_id("chatcmpl")
        gens = await self.generations(plan.prompt.token_ids, plan.params, req.n, request_id, req.stop_strings(),
                                      self.hidden_ids(req), "messages", plan.grammar_param)
        if not await self.start_all(request, gens):
            return Response(status_code=499)
        self.metrics.record_first_token(time.monotonic() - arrived)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            stream = self._chat_stream(plan, gens, request_id, include_usage, arrived)
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        result = await self.run_unless_disconnected(request, self._chat_full(plan, gens, request_id, arrived))
        return Response(status_code=499) if result is None else JSONResponse(result)

    def chat_message(self, plan: ChatPlan, text: str) -> tuple[ChatMessageOut, list[ParsedToolCall]]:
        reasoning, content, calls = plan.parser().parse(plan.prompt.prefill + text)
        out_calls = [ToolCallOut(**c.to_openai()) for c in calls]
        if plan.legacy:
            return ChatMessageOut(content=content or None, reasoning_content=reasoning or None,
                                  function_call=out_calls[0].function if out_calls else None), calls
        return ChatMessageOut(content=content or None, reasoning_content=reasoning or None,
                              tool_calls=out_calls or None), calls

    async def _chat_full(self, plan: ChatPlan, gens: list[TextGeneration], request_id: str, arrived: float) -> dict:
        results = await asyncio.gather(*(_collect(g) for g in gens))
        choices = []
        for index, (text, last, logprobs) in enumerate(results):
            message, calls = self.chat_message(plan, text)
            reason = _chat_finish_reason(last.finish_reason, calls, plan.legacy)
            lp = None if plan.params.logprobs is None else {"content": chat_logprobs(self.token_texts, logprobs),
                                                             "refusal": None}
            choices.append(ChatChoice(index=index, message=message, finish_reason=reason, logprobs=lp))
        self.metrics.record_finish(choices[0].finish_reason, time.monotonic() - arrived)
        response = ChatCompletionResponse(id=request_id, model=self.model_name, choices=choices,
                                          usage=_usage([last for _, last, _ in results]))
        return response.model_dump(mode="json", exclude_none=False)

    async def _chat_stream(self, plan: ChatPlan, gens: list[TextGeneration], request_id: str,
                           include_usage: bool, arrived: float) -> AsyncIterator[str]:
        created = int(time.time())
        want_logprobs = plan.params.logprobs is not None

        def chunk(index: int, delta: dict, finish_reason: Optional[str] = None, logprobs=None) -> str:
            lp = {"content": chat_logprobs(self.token_texts, logprobs or []), "refusal": None} if want_logprobs else None
            return sse(json.dumps({"id": request_id, "object": "chat.completion.chunk", "created": created,
                                   "model": self.model_name, "choices": [{"index": index, "delta": delta,
                                   "logprobs": lp, "finish_reason": finish_reason}]}))

        n = len(gens)
        parsers = [plan.parser() for _ in gens]
        num_calls, lasts, held_logprobs = [0] * n, [None] * n, [[] for _ in gens]
        pending = [list(p.push(plan.prompt.prefill)) for p in parsers]  # reasoning, content, calls
        finished = False
        try:
            for index in range(n):
                yield chunk(index, {"role": "assistant", "content": ""})
            async for index, delta in _merged(gens):
                lasts[index] = delta
                _raise_if_engine_failed(delta)
                held_logprobs[index] += delta.logprobs
                r, c, k = parsers[index].push(delta.text)
                if delta.finished:
                    r2, c2, k2 = parsers[index].finish()
                    r, c, k = r + r2, c + c2, k + k2
                held = pending[index]
                held[0], held[1], held[2] = held[0] + r, held[1] + c, held[2] + k
                reasoning, content, calls = held
                if reasoning or content or calls:
                    out: dict = {}
                    if reasoning:
                        out["reasoning_content"] = reasoning
                    if content:
                        out["content"] = content
                    if calls and plan.legacy:  # one call at most (parallel_tool_calls is off)
                        out["function_call"] = calls[0].to_openai()["function"]
                    elif calls:
                        out["tool_calls"] = [{"index": num_calls[index] + i, **call.to_openai()}
                                             for i, call in enumerate(calls)]
                    num_calls[index] += len(calls)
                    yield chunk(index, out, logprobs=held_logprobs[index])
                    pending[index], held_logprobs[index] = ["", "", []], []
                if delta.finished:
                    reason = _chat_finish_reason(delta.finish_reason, [None] * num_calls[index], plan.legacy)
                    yield chunk(index, {}, finish_reason=reason, logprobs=held_logprobs[index])
                    held_logprobs[index] = []
            self.metrics.record_finish(_chat_finish_reason(lasts[0].finish_reason, [None] * num_calls[0],
                                                           plan.legacy), time.monotonic() - arrived)
            if include_usage:
                yield sse(json.dumps({"id": request_id, "object": "chat.completion.chunk", "created": created,
                                      "model": self.model_name, "choices": [], "usage": _usage(lasts).model_dump()}))
            finished = True
            yield sse("[DONE]")
        except asyncio.CancelledError:
            self.metrics.record_disconnect()
            raise
        except Exception as exc:  # headers are sent: report in the stream, as OpenAI does
            if not isinstance(exc, APIError):
                log.exception("chat stream %s failed", request_id)
                exc = APIError(f"generation failed: {exc}")
            yield sse(json.dumps(exc.body()))
        finally:
            if not finished:
                await _close_all(gens)

    # -- completions ---------------------------------------------------------------------------------
    async def complete(self, req: CompletionRequest, request: Request) -> Response:
        arrived = time.monotonic()
        self.check_model(req.model)
        req.check_supported()
        prompts = completion_prompts(self.tokenizer, req)
        request_id = random_id("cmpl")
        gens: list[TextGeneration] = []
        echoes: list[str] = []
        try:
            for p, (ids, text) in enumerate(prompts):
                param = "prompt" if len(prompts) == 1 else f"prompt[{p}]"
                params = self.sampling(req, len(ids), param)
                gens += await self.generations(ids, params, req.n, f"{request_id}-p{p}" if len(prompts) > 1
                                               else request_id, req.stop_strings(), self.hidden_ids(req), param, None)
                echoes += [text if req.echo else ""] * req.n
        except BaseException:
            await _close_all(gens)
            raise
        if not await self.start_all(request, gens):
            return Response(status_code=499)
        self.metrics.record_first_token(time.monotonic() - arrived)
        want_logprobs = req.logprob_count() is not None
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._completion_stream(gens, echoes, request_id, include_usage, arrived,
                                                             want_logprobs, req.n),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        result = await self.run_unless_disconnected(
            request, self._completion_full(gens, echoes, request_id, arrived, want_logprobs, req.n))
        return Response(status_code=499) if result is None else JSONResponse(result)

    async def _completion_full(self, gens: list[TextGeneration], echoes: list[str], request_id: str,
                               arrived: float, want_logprobs: bool, n: int) -> dict:
        results = await asyncio.gather(*(_collect(g) for g in gens))
        choices = []
        for index, ((text, last, logprobs), echo) in enumerate(zip(results, echoes)):
            lp = completion_logprobs(self.token_texts, logprobs, len(echo)) if want_logprobs else None
            choices.append(CompletionChoice(index=index, text=echo + text, finish_reason=last.finish_reason,
                                            logprobs=lp))
        self.metrics.record_finish(choices[0].finish_reason, time.monotonic() - arrived)
        response = CompletionResponse(id=request_id, model=self.model_name, choices=choices,
                                      usage=_usage([last for _, last, _ in results], n))
        return response.model_dump(mode="json")

    async def _completion_stream(self, gens: list[TextGeneration], echoes: list[str], request_id: str,
                                 include_usage: bool, arrived: float, want_logprobs: bool,
                                 n: int) -> AsyncIterator[str]:
        created = int(time.time())
        offsets = [len(e) for e in echoes]

        def chunk(index: int, text: str, finish_reason: Optional[str] = None, logprobs=()) -> str:
            lp = None
            if want_logprobs:
                lp = completion_logprobs(self.token_texts, list(logprobs), offsets[index])
                offsets[index] += sum(len(t) for t in lp["tokens"])
            return sse(json.dumps({"id": request_id, "object": "text_completion", "created": created,
                                   "model": self.model_name, "choices": [{"index": index, "text": text,
                                   "logprobs": lp, "finish_reason": finish_reason}]}))

        finished, lasts = False, [None] * len(gens)
        try:
            for index, echo in enumerate(echoes):
                if echo:
                    yield chunk(index, echo)
            async for index, delta in _merged(gens):
                _raise_if_engine_failed(delta)
                lasts[index] = delta
                if delta.finished:
                    yield chunk(index, delta.text, delta.finish_reason, delta.logprobs)
                elif delta.text:
                    yield chunk(index, delta.text, logprobs=delta.logprobs)
            self.metrics.record_finish(lasts[0].finish_reason, time.monotonic() - arrived)
            if include_usage:
                yield sse(json.dumps({"id": request_id, "object": "text_completion", "created": created,
                                      "model": self.model_name, "choices": [],
                                      "usage": _usage(lasts, n).model_dump()}))
            finished = True
            yield sse("[DONE]")
        except asyncio.CancelledError:
            self.metrics.record_disconnect()
            raise
        except Exception as exc:
            if not isinstance(exc, APIError):
                log.exception("completion stream %s failed", request_id)
                exc = APIError(f"generation failed: {exc}")
            yield sse(json.dumps(exc.body()))
        finally:
            if not finished:
                await _close_all(gens)

    # -- the rest ------------------------------------------------------------------------------------
    def model_card(self) -> ModelCard:
        return ModelCard(id=self.model_name, max_model_len=self.max_model_len)

    def models(self) -> dict:
        return ModelList(data=[self.model_card()]).model_dump()

    def model(self, model_id: str) -> dict:
        self.check_model(model_id)
        return self.model_card().model_dump()

    def health(self) -> Response:
        if not self.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        if not getattr(self.engine, "ready", True):  # the engine's warm-up (kernels, graphs) runs
            error = getattr(getattr(self.engine, "engine", None), "warmup_error", None)
            if error:
                return JSONResponse({"status": "error", "message": error}, status_code=503)
            return JSONResponse({"status": "warming_up"}, status_code=503)
        try:
            stats = self.engine.stats()
        except Exception as exc:
            return JSONResponse({"status": "error", "message": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "model": self.model_name, "num_running": stats.num_running,
                             "num_waiting": stats.num_waiting})

    def metrics_text(self) -> str:
        try:
            stats = self.engine.stats()
        except Exception:
            stats = None
        return self.metrics.render(stats)


async def _collect(gen: TextGeneration) -> tuple[str, TextDelta, list]:
    """A generation read to its end: (text, last delta, logprobs of its tokens)."""
    pieces, last, logprobs = [], None, []
    async for delta in gen:
        pieces.append(delta.text)
        logprobs += delta.logprobs
        last = delta
    _raise_if_engine_failed(last)
    return "".join(pieces), last, logprobs


async def _merged(gens: list[TextGeneration]) -> AsyncIterator[tuple[int, TextDelta]]:
    """(choice index, delta) from several generations as they arrive; closes them all on the way out."""
    if len(gens) == 1:
        async for delta in gens[0]:
            yield 0, delta
        return
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(index: int, gen: TextGeneration) -> None:
        try:
            async for delta in gen:
                queue.put_nowait((index, delta))
        except Exception as exc:
            queue.put_nowait((index, exc))
        finally:
            queue.put_nowait((index, end))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)]
    try:
        remaining = len(gens)
        while remaining:
            index, item = await queue.get()
            if item is end:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _close_all(gens)


async def _close_all(gens: list[TextGeneration]) -> None:
    for gen in gens:
        await gen.close()


def _chat_finish_reason(reason: Optional[str], calls: list, legacy: bool = False) -> Optional[str]:
    if calls and reason == "stop":
        return "function_call" if legacy else "tool_calls"
    return reason


def _raise_if_engine_failed(delta: Optional[TextDelta]) -> None:
    if delta is not None and delta.finish_reason == "error":
        raise APIError("the engine failed while generating this answer; the server log has the details")


def _usage(lasts: list[Optional[TextDelta]], per_prompt: Optional[int] = None) -> UsageInfo:
    """Usage of a request's choices: each prompt counted once (choices of one prompt share it)."""
    done = [d for d in lasts if d is not None]
    if not done:
        return UsageInfo()
    per_prompt = per_prompt or len(lasts)
    firsts = [d for i, d in enumerate(lasts) if d is not None and i % per_prompt == 0]
    prompt = sum(d.prompt_tokens for d in firsts)
    cached = sum(getattr(d, "cached_tokens", 0) for d in firsts)
    completion = sum(d.completion_tokens for d in done)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=cached))


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class _StatusRecorder:
    """Pure ASGI middleware counting responses by path and status (BaseHTTPMiddleware would get in
    the way of streaming responses and disconnect detection)."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            path = scope.get("path", "")
            known = {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models", "/health", "/metrics"}
            self.metrics.record_http(path if path in known else "other", status["code"])


def create_app(engine, served_model_name: Optional[str] = None, eos_token_ids: Iterable[int] = (),
               api_key: Optional[str] = None, manage_engine: bool = True,
               constrain_tool_calls: str = "forced") -> FastAPI:
    """The FastAPI app serving ``engine``.

    ``eos_token_ids``: extra EOS ids, added to the engine's (the checkpoint's) and the tokenizer's.
    ``api_key``: when set, /v1/* requests need ``Authorization: Bearer <key>``.
    ``manage_engine``: start the engine when the app starts and shut it down when it stops.
    ``constrain_tool_calls``: "forced" (a grammar keeps required and named tool calls valid; also any
    call of a tool with ``strict: true``) or "auto" (every tool call the model makes).
    """
    if constrain_tool_calls not in ("forced", "auto"):
        raise ValueError(f"constrain_tool_calls must be 'forced' or 'auto', not {constrain_tool_calls!r}")
    serving = OpenAIServing(engine, served_model_name, eos_token_ids, constrain_tool_calls)
    responses = ResponsesServing(serving)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage_engine:
            await engine.start()
        serving.ready = True
        try:
            yield
        finally:
            serving.ready = False
            if manage_engine:
                await engine.shutdown()

    app = FastAPI(title="LoopCoder OpenAI-compatible server", lifespan=lifespan)
    app.state.serving = serving

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        if request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise Unauthorized("missing or wrong API key: send Authorization: Bearer <key>")

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        return JSONResponse(_validation_error(exc).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        err = APIError(str(exc.detail))
        err.status_code, err.error_type = exc.status_code, "invalid_request_error"
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception):
        log.exception("request failed")
        return JSONResponse(APIError(f"internal error: {type(exc).__name__}: {exc}").body(), status_code=500)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        return await serving.chat(req, request)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(req: CompletionRequest, request: Request):
        return await serving.complete(req, request)

    @app.post("/v1/responses", dependencies=[Depends(authorize)])
    async def create_response(req: ResponsesRequest, request: Request):
        return await responses.create(req, request)

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models():
        return serving.models()

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(authorize)])
    async def model(model_id: str):
        return serving.model(model_id)

    @app.get("/health")
    async def health():
        return serving.health()

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(serving.metrics_text(), media_type="text/plain; version=0.0.4")

    app.add_middleware(_StatusRecorder, metrics=serving.metrics)
    return app


def _validation_error(exc: RequestValidationError) -> BadRequest:
    """A 400 naming the first bad field as ``param`` (``messages[0].role``); null for a body that is not
    JSON at all."""
    parts, params = [], []
    for err in exc.errors()[:5]:
        param = _param_path(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            param = None
        params.append(param)
        parts.append(f"{param or 'body'}: {err.get('msg', 'invalid')}")
    return BadRequest("invalid request: " + "; ".join(parts), param=params[0] if params else None)


def _param_path(loc) -> Optional[str]:
    path = ""
    for part in loc:
        if part == "body":
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_type_tag(part):  # pydantic names union members ("str", "list[int]", "function-after[...]")
            continue
        else:
            path += ("." if path else "") + str(part)
    return path or None


def _is_type_tag(part) -> bool:
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "dict", "list", "none")
                                      or "[" in part or part.startswith(("function-", "literal", "model")) or part[:1].isupper())
