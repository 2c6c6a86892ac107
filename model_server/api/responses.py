"""POST /v1/responses: OpenAI's Responses API on the chat path (same template, grammar, engine, parsers).

A request becomes a chat request: ``instructions`` a system message, ``input`` messages, ``function_call``
items the assistant's tool calls, ``function_call_output`` items tool messages, ``reasoning`` items the
assistant's reasoning; function tools, ``tool_choice``, ``reasoning.effort`` (thinking on unless "none"
or "minimal"), ``text.format`` (structured output) and ``max_output_tokens`` map to their chat fields.
The answer becomes output items in order: a ``reasoning`` item (thinking mode), a ``message`` with one
``output_text`` part, then one ``function_call`` item per tool call. Streamed, the same items arrive as
OpenAI's event sequence (``response.created`` ... ``response.completed``), each with a
``sequence_number``; the non-streamed answer is built by the same code from the same deltas.

Responses are not stored: ``previous_response_id`` (and ``item_reference`` inputs, ``conversation``,
``background``) are refused with a 400 naming the field; send the whole conversation in ``input``.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator, Literal, Optional, Union

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field, ValidationError

from .errors import APIError, BadRequest
from .generation import TextGeneration
from .logprobs import chat_logprobs
from .protocol import ChatCompletionRequest, _Request


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponsesRequest(_Request):
    model: str
    input: Union[str, list[dict[str, Any]]]
    instructions: Optional[str] = None
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Union[Literal["none", "auto", "required"], dict[str, Any], None] = None
    parallel_tool_calls: bool = True
    max_output_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    top_k: Optional[int] = Field(None, ge=0)  # vLLM extra
    seed: Optional[int] = None  # extra
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    include: Optional[list[str]] = None
    stream: bool = False
    reasoning: Optional[dict[str, Any]] = None
    text: Optional[dict[str, Any]] = None
    metadata: Optional[dict[str, Any]] = None
    previous_response_id: Optional[str] = None
    conversation: Any = None
    background: bool = False
    store: Optional[bool] = None
    user: Optional[str] = None
    truncation: Optional[Literal["auto", "disabled"]] = None

    def check_supported(self) -> None:
        if self.previous_response_id is not None:
            raise BadRequest("this server does not store responses, so previous_response_id cannot be used: "
                             "send the whole conversation in input", param="previous_response_id")
        if self.conversation is not None:
            raise BadRequest("this server does not store conversations: send the whole conversation in input",
                             param="conversation")
        if self.background:
            raise BadRequest("background responses need stored responses, which this server does not keep",
                             param="background")

    def effort(self) -> Optional[str]:
        if self.reasoning is None:
            return None
        return self.reasoning.get("effort") or "medium"

    def chat_tools(self) -> Optional[list[dict]]:
        if self.tools is None:
            return None
        out = []
        for i, tool in enumerate(self.tools):
            if tool.get("type") != "function":
                raise BadRequest(f"tools[{i}]: only function tools are supported, got {tool.get('type')!r}",
                                 param=f"tools[{i}].type")
            fn = tool.get("function") or {k: tool[k] for k in ("name", "description", "parameters", "strict")
                                           if tool.get(k) is not None}
            if not isinstance(fn.get("name"), str) or not fn["name"]:
                raise BadRequest(f"tools[{i}] needs a name", param=f"tools[{i}].name")
            out.append({"type": "function", "function": fn})
        return out

    def chat_tool_choice(self):
        choice = self.tool_choice
        if choice is None or isinstance(choice, str):
            return choice
        if choice.get("type") == "function" and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        raise BadRequest(f"tool_choice {choice!r} is not supported (use auto, none, required or a function)",
                         param="tool_choice")

    def response_format(self) -> Optional[dict]:
        fmt = (self.text or {}).get("format")
        if fmt is None:
            return None
        kind = fmt.get("type")
        if kind in ("text", "json_object"):
            return {"type": kind}
        if kind == "json_schema":
            return {"type": "json_schema", "json_schema": {k: fmt[k] for k in ("name", "schema", "strict",
                                                                              "description") if k in fmt}}
        raise BadRequest(f"text.format type {kind!r} is not supported", param="text.format.type")

    def messages(self) -> list[dict]:
        messages: list[dict] = []
        if self.instructions:
            messages.append({"role": "system", "content": self.instructions})
        if isinstance(self.input, str):
            return messages + [{"role": "user", "content": self.input}]
        turn: Optional[dict] = None  # the assistant message the next output items belong to
        for i, item in enumerate(self.input):
            kind = item.get("type", "message" if "role" in item else None)
            if kind == "message":
                role = item.get("role")
                if role not in ("user", "system", "developer", "assistant"):
                    raise BadRequest(f"input[{i}]: unknown role {role!r}", param=f"input[{i}].role")
                text = _text(item.get("content"), f"input[{i}].content")
                if role == "assistant":
                    if turn is None or turn["content"] is not None or turn["tool_calls"]:
                        turn = {"role": "assistant", "content": None, "tool_calls": []}
                        messages.append(turn)
                    turn["content"] = text
                else:
                    turn = None
                    messages.append({"role": role, "content": text})
            elif kind == "reasoning":
                parts = item.get("content") or item.get("summary") or []
                turn = {"role": "assistant", "content": None, "tool_calls": [],
                        "reasoning_content": "\n".join(p.get("text", "") for p in parts if isinstance(p, dict))}
                messages.append(turn)
            elif kind == "function_call":
                missing = [k for k in ("call_id", "name", "arguments") if not isinstance(item.get(k), str)]
                if missing:
                    raise BadRequest(f"input[{i}]: a function_call needs {', '.join(missing)}",
                                     param=f"input[{i}].{missing[0]}")
                if turn is None:
                    turn = {"role": "assistant", "content": None, "tool_calls": []}
                    messages.append(turn)
                turn["tool_calls"].append({"id": item["call_id"], "type": "function",
                                           "function": {"name": item["name"], "arguments": item["arguments"]}})
            elif kind == "function_call_output":
                if not isinstance(item.get("call_id"), str):
                    raise BadRequest(f"input[{i}]: a function_call_output needs call_id", param=f"input[{i}].call_id")
                output = item.get("output")
                text = output if isinstance(output, str) else _text(output, f"input[{i}].output")
                messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
                turn = None
            elif kind == "item_reference":
                raise BadRequest("this server does not store items, so item_reference cannot be used",
                                 param=f"input[{i}]")
            else:
                raise BadRequest(f"input[{i}]: item type {kind!r} is not supported", param=f"input[{i}].type")
        for m in messages:
            if m.get("tool_calls") == []:
                del m["tool_calls"]
        return messages

    def to_chat(self) -> ChatCompletionRequest:
        """The equivalent chat request (400 naming the Responses field when it does not validate)."""
        body: dict[str, Any] = {
            "model": self.model, "messages": self.messages(), "tools": self.chat_tools(),
            "tool_choice": self.chat_tool_choice(), "parallel_tool_calls": self.parallel_tool_calls,
            "max_completion_tokens": self.max_output_tokens, "temperature": self.temperature,
            "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed, "response_format": self.response_format(),
            "reasoning_effort": self.effort(),
        }
        if self.top_logprobs is not None or "message.output_text.logprobs" in (self.include or []):
            body.update(logprobs=True, top_logprobs=self.top_logprobs or 0)
        try:
            return ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = {"messages": "input", "response_format": "text.format"}.get(str(err["loc"][0]),
                                                                               str(err["loc"][0]))
            raise BadRequest(f"invalid {field}: {err['msg']}", param=field) from None


def _text(content, param: str) -> str:
    """Text of a content list (input_text, output_text or text parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{param} must be a string or a list of text parts", param=param)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text") \
                or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise BadRequest(f"{param}[{j}]: only text parts are supported, got {kind!r}", param=f"{param}[{j}]")
        texts.append(part["text"])
    return "".join(texts)


class _OutputBuilder:
    """The answer's output items, built from parser output step by step; each step returns the stream
    events it implies (the non-streamed answer ignores them)."""

    def __init__(self, want_logprobs: bool, token_texts):
        self.output: list[dict] = []
        self.open: Optional[dict] = None  # the reasoning or message item being written
        self.want_logprobs = want_logprobs
        self.token_texts = token_texts

    def push(self, reasoning: str, content: str, calls: list, logprobs: list) -> list[dict]:
        events: list[dict] = []
        if reasoning:
            events += self._ensure("reasoning")
            self.open["content"][0]["text"] += reasoning
            events.append(self._delta("response.reasoning_text.delta", reasoning))
        if content:
            events += self._ensure("message")
            part = self.open["content"][0]
            part["text"] += content
            lp = chat_logprobs(self.token_texts, logprobs) if self.want_logprobs else []
            if self.want_logprobs:
                part["logprobs"] += lp
            events.append({**self._delta("response.output_text.delta", content), "logprobs": lp})
        for call in calls:
            events += self._close()
            item = {"id": _id("fc"), "type": "function_call", "status": "in_progress", "call_id": call.id,
                    "name": call.name, "arguments": ""}
            index = len(self.output)
            self.output.append(item)
            events.append({"type": "response.output_item.added", "output_index": index, "item": dict(item)})
            events.append({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                           "output_index": index, "delta": call.arguments})
            events.append({"type": "response.function_call_arguments.done", "item_id": item["id"],
                           "output_index": index, "arguments": call.arguments})
            item.update(arguments=call.arguments, status="completed")
            events.append({"type": "response.output_item.done", "output_index": index, "item": dict(item)})
        return events

    def finish(self, status: str) -> list[dict]:
        return self._close(status)

    def _delta(self, kind: str, text: str) -> dict:
        return {"type": kind, "item_id": self.open["id"], "output_index": len(self.output) - 1,
                "content_index": 0, "delta": text}

    def _ensure(self, kind: str) -> list[dict]:
        if self.open is not None and self.open["type"] == kind:
            return []
        events = self._close()
        if kind == "reasoning":
            item = {"id": _id("rs"), "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
            part = {"type": "reasoning_text", "text": ""}
        else:
            item = {"id": _id("msg"), "type": "message", "role": "assistant", "status": "in_progress", "content": []}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        index = len(self.output)
        self.output.append(item)
        events.append({"type": "response.output_item.added", "output_index": index, "item": json.loads(json.dumps(item))})
        item["content"].append(part)
        events.append({"type": "response.content_part.added", "item_id": item["id"], "output_index": index,
                       "content_index": 0, "part": {**part}})
        self.open = item
        return events

    def _close(self, status: str = "completed") -> list[dict]:
        item, self.open = self.open, None
        if item is None:
            return []
        index = self.output.index(item)
        part = item["content"][0]
        item["status"] = status
        done = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if item["type"] == "reasoning":
            events = [{"type": "response.reasoning_text.done", **done, "text": part["text"]}]
        else:
            events = [{"type": "response.output_text.done", **done, "text": part["text"],
                       "logprobs": part["logprobs"]}]
        events.append({"type": "response.content_part.done", **done, "part": json.loads(json.dumps(part))})
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": json.loads(json.dumps(item))})
        return events


class ResponsesServing:
    """The /v1/responses endpoint on top of OpenAIServing (the chat machinery)."""

    def __init__(self, serving):
        self.serving = serving

    async def create(self, req: ResponsesRequest, request: Request) -> Response:
        serving = self.serving
        arrived = time.monotonic()
        serving.check_model(req.model)
        req.check_supported()
        plan = serving.plan_chat(req.to_chat(), prompt_param="input")
        grammar_param = "text.format" if plan.grammar_param == "response_format" else "tools"
        response_id = _id("resp")
        [gen] = await serving.generations(plan.prompt.token_ids, plan.params, 1, response_id, [],
                                          serving.hidden_ids(plan.req), "input", grammar_param)
        if not await serving.start_all(request, [gen]):
            return Response(status_code=499)
        serving.metrics.record_first_token(time.monotonic() - arrived)
        run = _Run(self, req, plan, gen, response_id, arrived)
        if req.stream:
            return StreamingResponse(run.events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        result = await serving.run_unless_disconnected(request, run.whole())
        return Response(status_code=499) if result is None else JSONResponse(result)


class _Run:
    """One response being generated: its deltas through the parser into output items and events."""

    def __init__(self, owner: ResponsesServing, req: ResponsesRequest, plan, gen: TextGeneration,
                 response_id: str, arrived: float):
        self.serving = owner.serving
        self.req, self.plan, self.gen = req, plan, gen
        self.response_id = response_id
        self.arrived = arrived
        self.created_at = int(time.time())
        self.builder = _OutputBuilder(plan.params.logprobs is not None, self.serving.token_texts)
        self.parser = plan.parser()
        self.sequence = 0

    def response(self, status: str, last=None) -> dict:
        req = self.req
        # echoed in the Responses shape (flat), whichever shape the client sent
        tools = [{"type": "function", **t["function"]} for t in req.chat_tools() or []]
        reasoning_text = "".join(part["text"] for item in self.builder.output if item["type"] == "reasoning"
                                 for part in item["content"])
        usage = None
        if last is not None:
            reasoning_tokens = len(self.serving.tokenizer(reasoning_text, add_special_tokens=False).input_ids) \
                if reasoning_text else 0
            usage = {"input_tokens": last.prompt_tokens,
                     "input_tokens_details": {"cached_tokens": getattr(last, "cached_tokens", 0),
                                              "cache_write_tokens": 0},
                     "output_tokens": last.completion_tokens,
                     "output_tokens_details": {"reasoning_tokens": min(reasoning_tokens, last.completion_tokens)},
                     "total_tokens": last.prompt_tokens + last.completion_tokens}
        fmt = (req.text or {}).get("format") or {"type": "text"}
        return {
            "id": self.response_id, "object": "response", "created_at": self.created_at, "status": status,
            "model": self.serving.model_name, "output": json.loads(json.dumps(self.builder.output)),
            "instructions": req.instructions, "tools": tools, "tool_choice": req.tool_choice or "auto",
            "parallel_tool_calls": req.parallel_tool_calls, "temperature": req.temperature, "top_p": req.top_p,
            "max_output_tokens": req.max_output_tokens, "top_logprobs": req.top_logprobs,
            "metadata": req.metadata or {}, "user": req.user, "store": False, "background": False,
            "previous_response_id": None, "truncation": req.truncation or "disabled",
            "text": {"format": fmt}, "reasoning": {"effort": req.effort(), "summary": None} if req.reasoning else None,
            "error": None, "usage": usage,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "completed_at": int(time.time()) if status == "completed" else None,
        }

    async def _steps(self) -> AsyncIterator[dict]:
        """Output events of the answer, ending with the final status; sets self.last."""
        self.last = None
        reasoning, content, calls = self.parser.push(self.plan.prompt.prefill)
        async for delta in self.gen:
            self.last = delta
            if delta.finish_reason == "error":
                raise APIError("the engine failed while generating this answer; the server log has the details")
            r, c, k = self.parser.push(delta.text)
            reasoning, content, calls = reasoning + r, content + c, calls + k
            if delta.finished:
                r, c, k = self.parser.finish()
                reasoning, content, calls = reasoning + r, content + c, calls + k
            if reasoning or content or calls:
                for event in self.builder.push(reasoning, content, calls, delta.logprobs):
                    yield event
                reasoning, content, calls = "", "", []
        self.status = "incomplete" if self.last.finish_reason == "length" else "completed"
        for event in self.builder.finish(self.status):
            yield event
        reason = "tool_calls" if any(i["type"] == "function_call" for i in self.builder.output) \
            and self.last.finish_reason == "stop" else self.last.finish_reason
        self.serving.metrics.record_finish(reason, time.monotonic() - self.arrived)

    async def whole(self) -> dict:
        async for _ in self._steps():
            pass
        return self.response(self.status, self.last)

    def _sse(self, event: dict) -> str:
        event = {**event, "sequence_number": self.sequence}
        self.sequence += 1
        return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"

    async def events(self) -> AsyncIterator[str]:
        finished = False
        try:
            yield self._sse({"type": "response.created", "response": self.response("in_progress")})
            yield self._sse({"type": "response.in_progress", "response": self.response("in_progress")})
            async for event in self._steps():
                yield self._sse(event)
            kind = "response.incomplete" if self.status == "incomplete" else "response.completed"
            finished = True
            yield self._sse({"type": kind, "response": self.response(self.status, self.last)})
        except asyncio.CancelledError:
            self.serving.metrics.record_disconnect()
            raise
        except Exception as exc:  # headers are sent: an error event, as OpenAI does
            if not isinstance(exc, APIError):
                exc = APIError(f"generation failed: {exc}")
            yield self._sse({"type": "error", "code": exc.code, "message": exc.message, "param": exc.param})
        finally:
            if not finished:
                await self.gen.close()
