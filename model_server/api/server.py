"""The OpenAI-compatible HTTP server (FastAPI) in front of the native engine.

Endpoints: POST /v1/chat/completions, POST /v1/completions (both streaming as server-sent events or
not), GET /v1/models, GET /health, GET /metrics. The engine is duck-typed: anything with the
``AsyncLLMEngine`` surface (``tokenizer``, ``model_name``, ``max_model_len``, ``generate``, ``abort``,
``stats``, ``start``, ``shutdown``) can be served.
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

from .errors import APIError, BadRequest, ModelNotFound, Unauthorized
from .generation import TextDelta, TextGeneration
from .metrics import ServerMetrics
from .output_parsers import ChatOutputParser
from .prompts import completion_prompt_ids, render_chat
from .protocol import (ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatMessageOut,
                       CompletionChoice, CompletionRequest, CompletionResponse, ModelCard, ModelList, ToolCallOut,
                       UsageInfo, random_id)

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


class OpenAIServing:
    """Request handling shared by the endpoints: validation, prompts, sampling, parsing, responses."""

    def __init__(self, engine, served_model_name: Optional[str] = None, eos_token_ids: Iterable[int] = ()):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name = served_model_name or engine.model_name
        self.max_model_len = int(engine.max_model_len)
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
        self.metrics = ServerMetrics()
        self.ready = False

    # -- shared steps ------------------------------------------------------------------------------
    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {self.model_name!r}",
                                param="model")

    def sampling(self, req, prompt_len: int):
        """SamplingParams for a request, its token limit clamped to the context left after the prompt."""
        from loopcoder.model_server.engine.types import SamplingParams

        room = self.max_model_len - prompt_len
        if room < 1:
            raise BadRequest(f"the prompt is {prompt_len} tokens; this model's context is {self.max_model_len} "
                             "tokens and at least one must be left to generate", param="messages")
        limit = req.token_limit()
        stop_ids = list(req.stop_token_ids or [])
        if not req.ignore_eos:
            stop_ids += [i for i in self.eos_ids if i not in stop_ids]
        temperature = 1.0 if req.temperature is None else req.temperature
        return SamplingParams(max_tokens=min(limit, room) if limit else room, temperature=temperature,
                              top_p=1.0 if req.top_p is None else req.top_p, top_k=req.top_k or 0,
                              seed=req.seed, stop_token_ids=stop_ids, ignore_eos=req.ignore_eos)

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

    async def start_unless_disconnected(self, request: Request, gen: TextGeneration) -> bool:
        """Wait for the request's first token (queueing and prefill); False if the client left meanwhile."""
        started = await self.run_unless_disconnected(request, _started(gen))
        if not started:
            await gen.close()
        return bool(started)

    # -- chat ----------------------------------------------------------------------------------------
    async def chat(self, req: ChatCompletionRequest, request: Request) -> Response:
        arrived = time.monotonic()
        self.check_model(req.model)
        req.check_supported()
        prompt = render_chat(self.tokenizer, req)
        request_id = random_id("chatcmpl")
        gen = TextGeneration(self.engine, prompt.token_ids, self.sampling(req, len(prompt.token_ids)),
                             request_id, req.stop_strings(), self.hidden_ids(req))
        if not await self.start_unless_disconnected(request, gen):
            return Response(status_code=499)
        self.metrics.record_first_token(time.monotonic() - arrived)
        parser = ChatOutputParser(prompt.starts_in_think, prompt.parse_tools, prompt.max_calls)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            stream = self._chat_stream(gen, parser, prompt.prefill, request_id, include_usage, arrived)
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        result = await self.run_unless_disconnected(request, self._chat_full(gen, parser, prompt.prefill,
                                                                              request_id, arrived))
        return Response(status_code=499) if result is None else JSONResponse(result)

    async def _chat_full(self, gen: TextGeneration, parser: ChatOutputParser, prefill: str, request_id: str,
                         arrived: float) -> dict:
        pieces, last = [], None
        async for delta in gen:
            pieces.append(delta.text)
            last = delta
        _raise_if_engine_failed(last)
        reasoning, content, calls = parser.parse(prefill + "".join(pieces))
        reason = _chat_finish_reason(last.finish_reason, calls)
        self.metrics.record_finish(reason, time.monotonic() - arrived)
        message = ChatMessageOut(content=content or None, reasoning_content=reasoning or None,
                                 tool_calls=[ToolCallOut(**c.to_openai()) for c in calls] or None)
        response = ChatCompletionResponse(id=request_id, model=self.model_name,
                                          choices=[ChatChoice(message=message, finish_reason=reason)],
                                          usage=_usage(last))
        return response.model_dump(mode="json")

    async def _chat_stream(self, gen: TextGeneration, parser: ChatOutputParser, prefill: str, request_id: str,
                           include_usage: bool, arrived: float) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(delta: dict, finish_reason: Optional[str] = None) -> str:
            return sse(json.dumps({"id": request_id, "object": "chat.completion.chunk", "created": created,
                                   "model": self.model_name, "choices": [{"index": 0, "delta": delta,
                                   "logprobs": None, "finish_reason": finish_reason}]}))

        num_calls, last, finished = 0, None, False
        try:
            yield chunk({"role": "assistant", "content": ""})
            reasoning, content, calls = parser.push(prefill)
            async for delta in gen:
                last = delta
                _raise_if_engine_failed(delta)
                r, c, k = parser.push(delta.text)
                reasoning, content, calls = reasoning + r, content + c, calls + k
                if delta.finished:
                    r, c, k = parser.finish()
                    reasoning, content, calls = reasoning + r, content + c, calls + k
                if reasoning or content or calls:
                    out: dict = {}
                    if reasoning:
                        out["reasoning_content"] = reasoning
                    if content:
                        out["content"] = content
                    if calls:
                        out["tool_calls"] = [{"index": num_calls + i, **call.to_openai()}
                                             for i, call in enumerate(calls)]
                        num_calls += len(calls)
                    yield chunk(out)
                    reasoning, content, calls = "", "", []
            reason = _chat_finish_reason(last.finish_reason, [None] * num_calls)
            self.metrics.record_finish(reason, time.monotonic() - arrived)
            yield chunk({}, finish_reason=reason)
            if include_usage:
                yield sse(json.dumps({"id": request_id, "object": "chat.completion.chunk", "created": created,
                                      "model": self.model_name, "choices": [], "usage": _usage(last).model_dump()}))
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
                await gen.close()

    # -- completions ---------------------------------------------------------------------------------
    async def complete(self, req: CompletionRequest, request: Request) -> Response:
        arrived = time.monotonic()
        self.check_model(req.model)
        req.check_supported()
        ids, prompt_text = completion_prompt_ids(self.tokenizer, req)
        request_id = random_id("cmpl")
        gen = TextGeneration(self.engine, ids, self.sampling(req, len(ids)), request_id, req.stop_strings(),
                             self.hidden_ids(req))
        if not await self.start_unless_disconnected(request, gen):
            return Response(status_code=499)
        self.metrics.record_first_token(time.monotonic() - arrived)
        echo = prompt_text if req.echo else ""
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._completion_stream(gen, echo, request_id, include_usage, arrived),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        result = await self.run_unless_disconnected(request, self._completion_full(gen, echo, request_id, arrived))
        return Response(status_code=499) if result is None else JSONResponse(result)

    async def _completion_full(self, gen: TextGeneration, echo: str, request_id: str, arrived: float) -> dict:
        pieces, last = [echo], None
        async for delta in gen:
            pieces.append(delta.text)
            last = delta
        _raise_if_engine_failed(last)
        self.metrics.record_finish(last.finish_reason, time.monotonic() - arrived)
        response = CompletionResponse(id=request_id, model=self.model_name, usage=_usage(last),
                                      choices=[CompletionChoice(text="".join(pieces), finish_reason=last.finish_reason)])
        return response.model_dump(mode="json")

    async def _completion_stream(self, gen: TextGeneration, echo: str, request_id: str, include_usage: bool,
                                 arrived: float) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(text: str, finish_reason: Optional[str] = None) -> str:
            return sse(json.dumps({"id": request_id, "object": "text_completion", "created": created,
                                   "model": self.model_name, "choices": [{"index": 0, "text": text,
                                   "logprobs": None, "finish_reason": finish_reason}]}))

        finished = False
        try:
            if echo:
                yield chunk(echo)
            async for delta in gen:
                _raise_if_engine_failed(delta)
                if delta.finished:
                    self.metrics.record_finish(delta.finish_reason, time.monotonic() - arrived)
                    yield chunk(delta.text, delta.finish_reason)
                    if include_usage:
                        yield sse(json.dumps({"id": request_id, "object": "text_completion", "created": created,
                                              "model": self.model_name, "choices": [],
                                              "usage": _usage(delta).model_dump()}))
                elif delta.text:
                    yield chunk(delta.text)
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
                await gen.close()

    # -- the rest ------------------------------------------------------------------------------------
    def models(self) -> dict:
        return ModelList(data=[ModelCard(id=self.model_name, max_model_len=self.max_model_len)]).model_dump()

    def health(self) -> Response:
        if not self.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
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


def _chat_finish_reason(reason: Optional[str], calls: list) -> Optional[str]:
    return "tool_calls" if calls and reason == "stop" else reason


async def _started(gen: TextGeneration) -> bool:
    await gen.start()
    return True


def _raise_if_engine_failed(delta: Optional[TextDelta]) -> None:
    if delta is not None and delta.finish_reason == "error":
        raise APIError("the engine failed while generating this answer; the server log has the details")


def _usage(delta: Optional[TextDelta]) -> UsageInfo:
    if delta is None:
        return UsageInfo()
    return UsageInfo(prompt_tokens=delta.prompt_tokens, completion_tokens=delta.completion_tokens,
                     total_tokens=delta.prompt_tokens + delta.completion_tokens)


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
            known = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"}
            self.metrics.record_http(path if path in known else "other", status["code"])


def create_app(engine, served_model_name: Optional[str] = None, eos_token_ids: Iterable[int] = (),
               api_key: Optional[str] = None, manage_engine: bool = True) -> FastAPI:
    """The FastAPI app serving ``engine``.

    ``eos_token_ids``: extra EOS ids, added to the engine's (the checkpoint's) and the tokenizer's.
    ``api_key``: when set, /v1/* requests need ``Authorization: Bearer <key>``.
    ``manage_engine``: start the engine when the app starts and shut it down when it stops.
    """
    serving = OpenAIServing(engine, served_model_name, eos_token_ids)

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
        return JSONResponse(BadRequest(_validation_message(exc)).body(), status_code=400)

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

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models():
        return serving.models()

    @app.get("/health")
    async def health():
        return serving.health()

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(serving.metrics_text(), media_type="text/plain; version=0.0.4")

    app.add_middleware(_StatusRecorder, metrics=serving.metrics)
    return app


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)
