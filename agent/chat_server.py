"""A small OpenAI-compatible chat-completions server on 127.0.0.1 whose answers come from Python code.

``ChatServer`` serves ``GET /v1/models`` (one model, with ``max_model_len``) and ``POST /v1/chat/completions``;
``respond(body)`` (override it) turns each request body into one *item*:

- an answer: ``{"content": str|None, "tool_calls": [{"name", "arguments"}], "reasoning": str,
  "usage": (prompt, completion), "finish_reason": str}``; it goes out as a real server's ``chat.completion``
  (``tool_calls`` as OpenAI objects with ids and JSON-string arguments, ``reasoning_content`` beside the content);
- ``{"status": 429, "retry_after": "1"}``, ``{"status": 500}``, ``{"status": 400, "message": ...}``: an error;
- ``{"drop": True}``: the connection is closed without any response;
- ``"delay": seconds`` on any item: wait that long first.

The tests' scripted models (tests/agent/scripted_server.py) and the LoopCoder-Nano teacher
(scenarios/nano/teacher.py) are built on it. ``upstream=URL`` makes it a recording proxy instead: every
request is forwarded there unchanged. ``auth`` keeps each chat request's Authorization header.
"""
from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional


def estimate_tokens(text: str, chars_per_token: float = 3.5) -> int:
    """A token count for servers without a tokenizer (SmolLM2's tokenizer: 3.3-3.9 characters a token on code,
    Markdown and tool schemas)."""
    return max(1, int(len(text) / chars_per_token))


class ChatServer:
    def __init__(self, model: str = "chat", max_model_len: Optional[int] = 4096, upstream: Optional[str] = None):
        self.model = model
        self.max_model_len = max_model_len
        self.upstream = upstream
        self.auth: list[str] = []
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "ChatServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what subclasses decide -------------------------------------------------------------------
    def respond(self, body: dict) -> dict:
        """The item answering one chat request (see the module docstring)."""
        raise NotImplementedError

    def record(self, body: dict) -> None:
        """Called with every chat request body a proxy forwards."""

    def usage(self, body: dict, message: dict) -> tuple[int, int]:
        """(prompt, completion) tokens reported for an answer that did not bring its own ``usage``."""
        return len(json.dumps(body.get("messages", []))) // 3, len(json.dumps(message)) // 3

    # -- the wire format --------------------------------------------------------------------------
    def answer_tag(self) -> str:
        """What tells answers apart in their ids (``chatcmpl-<tag>``, ``call_<tag>_<i>``)."""
        return str(next(self._ids))

    def completion(self, body: dict, item: dict) -> dict:
        n = self.answer_tag()
        calls = [{"id": f"call_{n}_{i}", "type": "function",
                  "function": {"name": c.get("name"), "arguments": c["arguments"] if isinstance(c["arguments"], str)
                               else json.dumps(c["arguments"])}} for i, c in enumerate(item.get("tool_calls", []))]
        message: dict[str, Any] = {"role": "assistant", "content": item.get("content")}
        if calls:
            message["tool_calls"] = calls
        if item.get("reasoning") is not None:
            message["reasoning_content"] = item["reasoning"]
        prompt, completion = item.get("usage") or self.usage(body, message)
        return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": item.get("finish_reason", "tool_calls" if calls else "stop")}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body go out in separate writes: without this, delayed ACKs add ~40 ms per answer
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def send_json(self, status: int, payload: dict, headers: Optional[dict] = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if server.upstream:
                    return self.forward("GET", None)
                if self.path.rstrip("/").endswith("/models"):
                    card = {"id": server.model, "object": "model", "created": 0, "owned_by": "loopcoder"}
                    if server.max_model_len:
                        card["max_model_len"] = server.max_model_len
                    return self.send_json(200, {"object": "list", "data": [card]})
                self.send_json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError as exc:
                    return self.send_json(400, {"error": {"message": f"the body is not JSON: {exc.msg}"}})
                server.auth.append(self.headers.get("Authorization", ""))
                if server.upstream:
                    server.record(body)
                    return self.forward("POST", body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self.send_json(404, {"error": {"message": "not found"}})
                try:
                    item = server.respond(body)
                except Exception as exc:  # noqa: BLE001 - a bug of the answering code is the client's 500
                    item = {"status": 500, "message": f"{type(exc).__name__}: {exc}"[:500]}
                if item.get("delay"):
                    time.sleep(item["delay"])
                if item.get("drop"):
                    self.close_connection = True
                    self.connection.shutdown(2)  # no status line at all: the client sees a dropped connection
                    return
                if "status" in item:
                    headers = {"Retry-After": item["retry_after"]} if "retry_after" in item else {}
                    return self.send_json(item["status"], {"error": {
                        "message": item.get("message", f"error {item['status']}"), "type": "server",
                        "param": None, "code": item["status"]}}, headers)
                self.send_json(200, server.completion(body, item))

            def forward(self, method: str, body: Optional[dict]) -> None:
                import httpx

                path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                r = httpx.request(method, server.upstream.rstrip("/") + path, json=body, timeout=600)
                self.send_json(r.status_code, r.json())

        return Handler
