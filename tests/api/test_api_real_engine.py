"""What test_api_app_unit.py checks against a scripted engine, here against the real one: the native engine
on the fitted tiny checkpoint (conftest.py), served by uvicorn on loopback with an API key. Auth, several
tool calls in one answer, parallel_tool_calls, call syntax with tools off, an engine failure mid-answer."""
from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from api_support import (MODEL, TOOL_TEXT_ANSWER, TOOL_TEXT_QUESTION, TOOLS, TWO_CITIES_QUESTION, WEATHER_ANSWER,
                         WEATHER_AFTER_TOOL, start_server)

KEY = "sk-test-7c1e"


@pytest.fixture(scope="module")
def server(trained_checkpoint):
    server = start_server(trained_checkpoint, api_key=KEY, max_model_len=1024)
    yield server
    server.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def sse_events(response: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]


def test_api_key_guards_every_v1_endpoint_but_not_health_or_metrics(server, client):
    body = {"model": MODEL, "messages": WEATHER_AFTER_TOOL, "max_tokens": 4, "temperature": 0}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        assert httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers).status_code == 401
        r = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "x"}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert httpx.get(server.url + "/metrics").status_code == 200
    out = client.chat.completions.create(model=MODEL, messages=WEATHER_AFTER_TOOL, tools=TOOLS, temperature=0,
                                         max_tokens=64)
    assert out.choices[0].message.content == WEATHER_ANSWER


def test_two_tool_calls_in_one_answer_and_parallel_tool_calls_false(client):
    kwargs = dict(model=MODEL, messages=TWO_CITIES_QUESTION, tools=TOOLS, temperature=0, max_tokens=80)
    out = client.chat.completions.create(**kwargs)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == \
        [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert len({c.id for c in calls}) == 2

    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    streamed = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, json.loads(tc.function.arguments)["city"]) for tc in streamed] == [(0, "Paris"), (1, "Rome")]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # the same answer, but the client asked for at most one call
    one = client.chat.completions.create(parallel_tool_calls=False, **kwargs).choices[0]
    assert [json.loads(c.function.arguments) for c in one.message.tool_calls] == [{"city": "Paris"}]
    assert one.finish_reason == "tool_calls" and one.message.content is None
    chunks = list(client.chat.completions.create(stream=True, parallel_tool_calls=False, **kwargs))
    assert [tc.index for c in chunks for tc in (c.choices[0].delta.tool_calls or [])] == [0]


@pytest.mark.parametrize("fields", [{}, {"tools": TOOLS, "tool_choice": "none"}], ids=["no-tools", "tool-choice-none"])
def test_call_syntax_stays_text_when_tools_are_off(client, fields):
    kwargs = dict(model=MODEL, messages=TOOL_TEXT_QUESTION, temperature=0, max_tokens=64, **fields)
    out = client.chat.completions.create(**kwargs).choices[0]
    assert out.message.content == TOOL_TEXT_ANSWER and out.message.tool_calls is None
    assert out.finish_reason == "stop"
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TOOL_TEXT_ANSWER
    assert not any(c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


class FailOnce:
    """Fault injection: the model's output layer raises on its ``after``-th call once armed (the real
    engine step fails there, as a CUDA error or a bad kernel would)."""

    def __init__(self, model, after: int):
        self.after, self.calls, self.lock = after, 0, threading.Lock()
        self.handle = model.lm_head.register_forward_hook(self)

    def __call__(self, module, args, output):
        with self.lock:
            self.calls += 1
            if self.calls == self.after:
                raise RuntimeError("injected failure in the output layer")

    def remove(self):
        self.handle.remove()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_engine_failure_mid_answer_is_reported_and_the_server_goes_on(server, client, stream):
    body = {"model": MODEL, "messages": WEATHER_AFTER_TOOL, "tools": TOOLS, "max_tokens": 64, "temperature": 0,
            "stream": stream}
    headers = {"Authorization": f"Bearer {KEY}"}
    # call 1 is the prefill (first token), calls 2.. decode: the third call fails after two tokens
    fault = FailOnce(server.engine.engine.model, after=3)
    try:
        r = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
    finally:
        fault.remove()
    assert fault.calls == 3
    if stream:
        assert r.status_code == 200
        events = sse_events(r)
        assert "[DONE]" not in events
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text and WEATHER_ANSWER.startswith(text) and text != WEATHER_ANSWER  # part of the answer came
        error = json.loads(events[-1])["error"]
    else:
        assert r.status_code == 500
        error = r.json()["error"]
    assert "engine failed" in error["message"]
    # the engine finished the failed request (no slot held) and answers the next one in full
    out = client.chat.completions.create(model=MODEL, messages=WEATHER_AFTER_TOOL, tools=TOOLS, temperature=0,
                                         max_tokens=64)
    assert out.choices[0].message.content == WEATHER_ANSWER
    stats = server.engine.stats()
    assert stats.num_running == 0 and stats.kv_blocks_used == 0
