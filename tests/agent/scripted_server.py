"""A real OpenAI-compatible HTTP server on 127.0.0.1 that answers from a script, and can misbehave on purpose.

The HTTP side is ``loopcoder.agent.chat_server.ChatServer``; each chat request takes the next script item
(an answer, an error status, a dropped connection, a delay: the item format of chat_server.py; ``answer()``
and ``call()`` build answers). An exhausted script answers 400.

With ``upstream=URL`` it is a recording proxy instead: every request is forwarded there unchanged.
``requests`` holds every chat request body received, ``times`` when each arrived, ``auth`` its
Authorization header.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from loopcoder.agent.chat_server import ChatServer


def call(name: str, arguments: Any = None, **fields) -> dict:
    """A native tool call answer (arguments: a dict, or a string sent as is)."""
    return {"tool_calls": [{"name": name, "arguments": {} if arguments is None else arguments}], **fields}


def answer(content: Optional[str], **fields) -> dict:
    """A plain text answer (tool calls written in the text, or none)."""
    return {"content": content, **fields}


class ScriptedServer(ChatServer):
    def __init__(self, script: list[dict] | None = None, model: str = "scripted", max_model_len: Optional[int] = 4096,
                 upstream: Optional[str] = None):
        super().__init__(model, max_model_len, upstream)
        self.script = list(script or [])
        self.requests: list[dict] = []
        self.times: list[float] = []

    def record(self, body: dict) -> None:
        with self.lock:
            self.requests.append(body)

    def respond(self, body: dict) -> dict:
        with self.lock:
            self.requests.append(body)
            self.times.append(time.monotonic())
            if not self.script:
                return {"status": 400, "message": "the script is exhausted"}
            item = self.script.pop(0)
        if "status" in item and "message" not in item:
            item = {**item, "message": f"scripted {item['status']}"}
        return item

    def answer_tag(self) -> str:
        return f"s{len(self.requests)}"
