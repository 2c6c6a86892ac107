"""The app with a scripted engine (Starlette's TestClient, no network): paths a real tiny model cannot be
made to take on demand, such as an engine failure mid-answer, several tool calls in one answer, auth."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from loopcoder.model_server.api import create_app
from loopcoder.model_server.engine.types import EngineStats, TokenEvent
from loopcoder.model_server.plt.tokenizer import ASSET_DIR, load_tokenizer

TOKENIZER = load_tokenizer(ASSET_DIR)


class ScriptedEngine:
    """Answers every request with ``script`` one token per event, then ends with ``finish``."""

    model_name = "scripted"
    max_model_len = 2048

    def __init__(self, script: str, finish: str = "stop"):
        self.tokenizer = TOKENIZER
        self.ids = TOKENIZER(script, add_special_tokens=False).input_ids
        self.finish = finish
        self.aborted: list[str] = []
        self.params = []

    async def start(self):
        pass

    async def shutdown(self):
        pass

    def stats(self):
        return EngineStats(0, 0, 0, 16, 0, 0, 0, len(self.aborted), 0)

    def abort(self, request_id):
        self.aborted.append(request_id)

    async def generate(self, prompt_ids, params, request_id):
        self.params.append(params)
        ids = self.ids[:params.max_tokens]
        for i, token in enumerate(ids):
            last = i == len(ids) - 1
            reason = (self.finish if len(ids) == len(self.ids) else "length") if last else None
            yield TokenEvent(request_id, [token], last, reason, len(prompt_ids), i + 1)


def client_for(script: str, finish: str = "stop", **kwargs) -> tuple[TestClient, ScriptedEngine]:
    engine = ScriptedEngine(script, finish)
    return TestClient(create_app(engine, **kwargs)), engine


def chat(client, **fields):
    body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], **fields}
    return client.post("/v1/chat/completions", json=body)


def sse_events(response) -> list:
    return [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]


TWO_CALLS = ('<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
             '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>')
TOOLS = [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]


def test_two_tool_calls_in_one_answer_streamed_and_not():
    client, _ = client_for(TWO_CALLS)
    with client:
        whole = chat(client, tools=TOOLS).json()["choices"][0]
        assert whole["finish_reason"] == "tool_calls" and whole["message"]["content"] is None
        assert [(c["function"]["name"], c["function"]["arguments"]) for c in whole["message"]["tool_calls"]] == \
            [("a", '{"x": 1}'), ("b", "{}")]
        events = sse_events(chat(client, tools=TOOLS, stream=True))
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
        assert [(tc["index"], tc["function"]["name"]) for tc in calls] == [(0, "a"), (1, "b")]
        assert all("content" not in c["choices"][0]["delta"] or c["choices"][0]["delta"]["content"] == ""
                   for c in chunks)
        one = chat(client, tools=TOOLS, parallel_tool_calls=False).json()["choices"][0]["message"]["tool_calls"]
        assert [c["function"]["name"] for c in one] == ["a"]


def test_eos_and_control_tokens_are_not_in_the_text_unless_asked():
    client, _ = client_for("done<|im_end|>")
    with client:
        assert chat(client).json()["choices"][0]["message"]["content"] == "done"
        raw = chat(client, skip_special_tokens=False).json()["choices"][0]["message"]["content"]
        assert raw == "done"  # the EOS that ended the answer is never text
    client, _ = client_for("a<|im_start|>b")
    with client:
        assert chat(client).json()["choices"][0]["message"]["content"] == "ab"
        assert chat(client, skip_special_tokens=False).json()["choices"][0]["message"]["content"] == "a<|im_start|>b"


def test_stop_string_aborts_the_engine_request():
    client, engine = client_for("one two three four")
    with client:
        out = client.post("/v1/completions", json={"model": "scripted", "prompt": "x", "stop": [" three"]}).json()
    assert out["choices"][0]["text"] == "one two" and out["choices"][0]["finish_reason"] == "stop"
    assert len(engine.aborted) == 1


def test_sampling_params_reach_the_engine():
    client, engine = client_for("x")
    with client:
        chat(client, max_completion_tokens=7, temperature=0.5, top_p=0.9, top_k=40, seed=3, stop_token_ids=[9])
        chat(client, ignore_eos=True, max_tokens=5)
        chat(client)
    first, second, third = engine.params
    assert (first.max_tokens, first.temperature, first.top_p, first.top_k, first.seed) == (7, 0.5, 0.9, 40, 3)
    assert 9 in first.stop_token_ids and TOKENIZER.eos_token_id in first.stop_token_ids
    assert second.ignore_eos and TOKENIZER.eos_token_id not in second.stop_token_ids
    assert third.temperature == 1.0 and third.max_tokens > 1000  # defaults: OpenAI's, and the context left


def test_engine_failure_is_500_or_an_error_event():
    client, _ = client_for("partial answer", finish="error")
    with client:
        r = chat(client)
        assert r.status_code == 500 and "engine failed" in r.json()["error"]["message"]
        events = sse_events(chat(client, stream=True))
        assert "engine failed" in json.loads(events[-1])["error"]["message"]


def test_api_key_is_required_when_set():
    client, _ = client_for("x", api_key="sekrit")
    with client:
        assert chat(client).status_code == 401
        assert client.get("/v1/models").status_code == 401
        ok = client.get("/v1/models", headers={"Authorization": "Bearer sekrit"})
        assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "scripted"
        assert client.get("/health").status_code == 200


def test_health_is_503_until_the_engine_started_and_unknown_paths_are_json():
    client, _ = client_for("x")
    assert client.get("/health").status_code == 503  # no lifespan: the engine was never started
    with client:
        assert client.get("/health").json()["status"] == "ok"
        r = client.get("/v1/nothing")
        assert r.status_code == 404 and "error" in r.json()


@pytest.mark.parametrize("fields", [{"best_of": 2}, {"echo": True, "suffix": "x"}, {"prompt": ["a", [1, 2]]},
                                    {"echo": True, "logprobs": 1}])
def test_completion_refusals(fields):
    client, _ = client_for("x")
    with client:
        r = client.post("/v1/completions", json={"model": "scripted", "prompt": "p", **fields})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
