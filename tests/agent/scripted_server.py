"""A real OpenAI-compatible HTTP server on 127.0.0.1 that answers from a script, and can misbehave on purpose.

Each chat request takes the next script item:

- an answer: ``{"content": str|None, "tool_calls": [{"name", "arguments"}], "reasoning": str,
  "usage": (prompt, completion), "finish_reason": str}`` (``answer()`` and ``call()`` build them);
- ``{"status": 429, "retry_after": "1"}``, ``{"status": 500}``, ``{"status": 400, "message": ...}``: an error;
- ``{"drop": True}``: the connection is closed without any response;
- ``"delay": seconds`` on any item: wait that long first (a slow answer).

With ``upstream=URL`` it is a recording proxy instead: every request is forwarded there unchanged.
``requests`` holds every chat request body received, ``times`` when each arrived, ``auth`` its
Authorization header.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional


def call(name: str, arguments: Any = None, **fields) -> dict:
    """A native tool call answer (arguments: a dict, or a string sent as is)."""
    return {"tool_calls": [{"name": name, "arguments": {} if arguments is None else arguments}], **fields}


def answer(content: Optional[str], **fields) -> dict:
    """A plain text answer (tool calls written in the text, or none)."""
    return {"content": content, **fields}


class ScriptedServer:
    def __init__(self, script: list[dict] | None = None, model: str = "scripted", max_model_len: Optional[int] = 4096,
                 upstream: Optional[str] = None):
        self.script = list(script or [])
        self.model = model
        self.max_model_len = max_model_len
        self.upstream = upstream
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.auth: list[str] = []  # the Authorization header of each chat request
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def next_item(self, body: dict) -> dict:
        with self.lock:
            self.requests.append(body)
            self.times.append(time.monotonic())
            if not self.script:
                return {"status": 400, "message": "the script is exhausted"}
            return self.script.pop(0)

    def completion(self, body: dict, item: dict) -> dict:
        calls = [{"id": f"call_s{len(self.requests)}_{i}", "type": "function",
                  "function": {"name": c.get("name"), "arguments": c["arguments"] if isinstance(c["arguments"], str)
                               else json.dumps(c["arguments"])}} for i, c in enumerate(item.get("tool_calls", []))]
        message: dict = {"role": "assistant", "content": item.get("content")}
        if calls:
            message["tool_calls"] = calls
        if item.get("reasoning") is not None:
            message["reasoning_content"] = item["reasoning"]
        prompt, completion = item.get("usage") or (len(json.dumps(body.get("messages", []))) // 3,
                                                   len(json.dumps(message)) // 3)
        return {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": item.get("finish_reason", "tool_calls" if calls else "stop")}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
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
                    card = {"id": server.model, "object": "model", "created": 0, "owned_by": "test"}
                    if server.max_model_len:
                        card["max_model_len"] = server.max_model_len
                    return self.send_json(200, {"object": "list", "data": [card]})
                self.send_json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server.auth.append(self.headers.get("Authorization", ""))
                if server.upstream:
                    with server.lock:
                        server.requests.append(body)
                    return self.forward("POST", body)
                item = server.next_item(body)
                if item.get("delay"):
                    time.sleep(item["delay"])
                if item.get("drop"):
                    self.close_connection = True
                    self.connection.shutdown(2)  # no status line at all: the client sees a dropped connection
                    return
                if "status" in item:
                    headers = {"Retry-After": item["retry_after"]} if "retry_after" in item else {}
                    return self.send_json(item["status"], {"error": {
                        "message": item.get("message", f"scripted {item['status']}"), "type": "scripted",
                        "param": None, "code": item["status"]}}, headers)
                self.send_json(200, server.completion(body, item))

            def forward(self, method: str, body: Optional[dict]) -> None:
                import httpx

                path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                r = httpx.request(method, server.upstream.rstrip("/") + path, json=body, timeout=600)
                self.send_json(r.status_code, r.json())

        return Handler
