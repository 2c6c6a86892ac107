"""The server side of issue 14 on the real engine (tiny checkpoint, CPU): /health is not ready until the
engine's warm-up has run, requests sent meanwhile wait and are answered after it, the warm-up time is
reported once; prefix-cache hits show in the usage (``prompt_tokens_details.cached_tokens``, as OpenAI)
and in /metrics."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from api_support import MODEL


class GatedEngine:
    """The real LLMEngine whose warm-up waits until the test opens the gate (to observe the server
    while warm-up runs); the warm-up itself is the engine's own."""

    @staticmethod
    def make(checkpoint, **fields):
        from loopcoder.model_server.engine import EngineConfig, LLMEngine

        class Gated(LLMEngine):
            gate = threading.Event()
            warm_ups = 0

            def warm_up(self):
                self.gate.wait(60)
                Gated.warm_ups += 1
                return super().warm_up()

        return Gated.from_config(EngineConfig(model=str(checkpoint), **fields))


def test_health_is_not_ready_until_the_warm_up_ran(tiny_checkpoint):
    from loopcoder.model_server.api import ServerThread, create_app
    from loopcoder.model_server.engine import AsyncLLMEngine

    engine = GatedEngine.make(tiny_checkpoint, max_model_len=256)
    reported = []
    front = AsyncLLMEngine(engine, MODEL, on_ready=reported.append)
    server = ServerThread(create_app(front, served_model_name=MODEL)).start(wait_ready=False)
    try:
        for _ in range(3):
            r = httpx.get(server.url + "/health")
            assert r.status_code == 503 and r.json()["status"] == "warming_up"
            time.sleep(0.05)
        assert not engine.ready and reported == []
        answer = {}
        body = {"model": MODEL, "prompt": list(range(20, 40)), "max_tokens": 3, "temperature": 0}
        sender = threading.Thread(target=lambda: answer.update(
            r=httpx.post(server.url + "/v1/completions", json=body, timeout=60)))
        sender.start()
        time.sleep(0.3)
        assert "r" not in answer  # waits in the engine's inbox behind the warm-up
        engine.gate.set()
        sender.join(60)
        assert answer["r"].status_code == 200 and answer["r"].json()["usage"]["completion_tokens"] == 3
        r = httpx.get(server.url + "/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert type(engine).warm_ups == 1 and len(reported) == 1 and reported[0] > 0
        assert engine.warmup_seconds == reported[0]
        # the warm-up left nothing behind: no cached blocks, no counted tokens of its own
        stats = engine.stats()
        assert stats.prompt_tokens_total == 20 and stats.kv_blocks_used == 0
    finally:
        engine.gate.set()
        server.stop()


def test_cached_tokens_in_usage_and_metrics(tiny_server):
    prompt = list(range(20, 120))  # 100 tokens
    url = tiny_server.url

    def metric_values() -> dict:
        text = httpx.get(url + "/metrics").text
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}

    hits_before = metric_values()["loopcoder_prefix_cache_snapshot_hits_total"]  # the module's server is shared
    first = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2,
                                                      "temperature": 0}, timeout=60).json()
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    # the same prompt plus two tokens: 100 tokens were computed, 6 blocks of 16 are cached, and all but
    # the recompute tail of the tiny model (R=2: L(w-1)+1 = 2*7+1 = 15 positions) is skipped
    second = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": prompt + [7, 8], "max_tokens": 2,
                                                       "temperature": 0}, timeout=60).json()
    assert second["usage"]["prompt_tokens_details"] == {"cached_tokens": 96 - 15}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "usage and metrics " * 20}], "max_tokens": 2,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    httpx.post(url + "/v1/chat/completions", json=chat, timeout=60)
    with httpx.stream("POST", url + "/v1/chat/completions", json=chat, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    import json

    usage = json.loads(lines[-1][len("data: "):])["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] > 0
    values = metric_values()
    assert values["loopcoder_prefix_cache_skipped_tokens_total"] >= 81 + usage["prompt_tokens_details"]["cached_tokens"]
    assert values["loopcoder_prefix_cache_hit_tokens_total"] > values["loopcoder_prefix_cache_skipped_tokens_total"]
    assert values["loopcoder_prefix_cache_blocks"] > 0
    # the completions never reach an earlier prompt's end on a block boundary; the chat sent again resumes
    # from the snapshot its first sending kept at its history's end (before the generation prompt)
    assert values["loopcoder_prefix_cache_snapshot_hits_total"] == hits_before + 1
    assert values["loopcoder_loop_state_snapshots"] > 0


@pytest.mark.parametrize("expected", [False, True])
def test_serve_settings_reach_the_engine_config(expected, tiny_checkpoint):
    from loopcoder.configs import load_config
    from loopcoder.scenarios.serve_cli import ServeConfig, engine_config

    cfg = load_config(ServeConfig, None, [f"engine.model={tiny_checkpoint}", "engine.gpu_memory_utilization=0.5",
                                          "engine.num_kv_blocks=77", f"engine.enable_prefix_caching={str(expected).lower()}",
                                          f"engine.async_scheduling={str(expected).lower()}"],
                      default="serve")
    engine_cfg = engine_config(cfg.engine)
    assert engine_cfg.gpu_memory_utilization == 0.5 and engine_cfg.num_kv_blocks == 77
    assert engine_cfg.enable_prefix_caching is expected and engine_cfg.max_model_len is None
    assert engine_cfg.async_scheduling is expected


def test_a_chat_conversation_resumes_each_turn_from_the_history_snapshot(tiny_server, tiny_checkpoint):
    """An agent re-sends its conversation with the answer and a tool result appended. The next prompt leaves
    the previous one where the generation prompt began; the server names that point (history_tokens), the
    engine keeps the loop state at its block boundary, and every later turn resumes there: one snapshot hit
    per turn, and the usage's cached tokens reach that point."""
    import json

    from loopcoder.model_server.api.prompts import render_chat
    from loopcoder.model_server.api.protocol import ChatCompletionRequest
    from loopcoder.model_server.plt.tokenizer import load_tokenizer

    url = tiny_server.url
    tokenizer = load_tokenizer(tiny_checkpoint)

    def snapshot_hits() -> float:
        text = httpx.get(url + "/metrics").text
        return next(float(line.split()[1]) for line in text.splitlines()
                    if line.startswith("loopcoder_prefix_cache_snapshot_hits_total "))

    tools = [{"type": "function", "function": {"name": "view", "description": "Show a file.",
                                               "parameters": {"type": "object",
                                                              "properties": {"path": {"type": "string"}}}}}]
    messages = [{"role": "system", "content": "You fix bugs in small repositories. " * 6},
                {"role": "user", "content": "median() is wrong for lists of even length. " * 5}]
    before = snapshot_hits()
    for turn in range(3):
        body = {"model": MODEL, "messages": messages, "tools": tools, "max_tokens": 8, "temperature": 0,
                "chat_template_kwargs": {"enable_thinking": False}}
        prompt = render_chat(tokenizer, ChatCompletionRequest.model_validate(body), history=True)
        # the prompt minus its generation prompt: the history the next turn re-sends
        assert 0 < prompt.history_tokens < len(prompt.token_ids)
        reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
        cached = reply["usage"]["prompt_tokens_details"]["cached_tokens"]
        if turn:
            assert cached == previous_history // 16 * 16  # resumed at the snapshot, nothing recomputed
            assert snapshot_hits() == before + turn
        previous_history = prompt.history_tokens
        call = {"id": f"call_{turn}", "type": "function",
                "function": {"name": "view", "arguments": json.dumps({"path": f"m{turn}.py"})}}
        messages = messages + [{"role": "assistant", "content": None, "tool_calls": [call]},
                               {"role": "tool", "tool_call_id": f"call_{turn}",
                                "content": f"def f{turn}(xs):\n    return sorted(xs)[len(xs) // 2]\n" * 3}]
        # the next prompt really shares the history: render it and compare
        following = render_chat(tokenizer, ChatCompletionRequest.model_validate(dict(body, messages=messages)))
        assert following.token_ids[:prompt.history_tokens] == prompt.token_ids[:prompt.history_tokens]
