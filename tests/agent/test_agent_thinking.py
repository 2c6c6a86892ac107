"""Thinking mode per phase reaches the server as chat_template_kwargs.enable_thinking; reasoning_content is
recorded in the trajectory and sent back only with keep_reasoning. Against the native server (a real tiny
checkpoint, through a recording proxy on loopback) and against a scripted server that returns reasoning
the same way."""
import pytest

from agent_support import config, episode, of_type
from scripted_server import ScriptedServer, call


@pytest.fixture
def proxy(tiny_native_server):
    with ScriptedServer(upstream=tiny_native_server.url + "/v1") as server:
        yield server


def native_config(url, thinking, keep_reasoning=False):
    # the planner (fewer tools: a shorter prompt on a CPU), greedy, short answers: the random model writes
    # noise, so each answer is a format error and the agent asks again, sending its history back
    return config(url, planner__thinking=thinking, keep_reasoning=keep_reasoning, model__max_tokens=24,
                  budgets__steps=2)


@pytest.mark.parametrize("keep_reasoning", [False, True])
def test_thinking_on_reaches_the_native_server_and_reasoning_is_recorded(proxy, repo, tmp_path, keep_reasoning):
    result, events = episode(native_config(proxy.url, True, keep_reasoning), repo, tmp_path / "run")
    assert result.reason in ("steps", "format_errors")
    assert [r["chat_template_kwargs"] for r in proxy.requests] == [{"enable_thinking": True}] * 2
    first = of_type(events, "model_response")[0]
    assert first.reasoning  # the template opened <think>: the native server returned the text as reasoning
    sent_back = proxy.requests[1]["messages"][2]
    assert sent_back["role"] == "assistant"
    if keep_reasoning:
        assert sent_back["reasoning_content"] == first.reasoning
    else:
        assert "reasoning_content" not in sent_back and first.reasoning not in str(proxy.requests[1])


def test_thinking_off_reaches_the_native_server_and_no_reasoning_comes_back(proxy, repo, tmp_path):
    _, events = episode(native_config(proxy.url, False), repo, tmp_path / "run")
    assert [r["chat_template_kwargs"] for r in proxy.requests] == [{"enable_thinking": False}] * 2
    assert all(e.reasoning is None for e in of_type(events, "model_response"))


def test_thinking_null_sends_no_template_kwargs(proxy, repo, tmp_path):
    episode(native_config(proxy.url, None), repo, tmp_path / "run")
    assert all("chat_template_kwargs" not in r for r in proxy.requests)


def test_planner_and_executor_thinking_are_set_per_phase(scripted, repo, tmp_path):
    plan = {"steps": [{"goal": "g", "files": [], "verify": "v"}]}
    server = scripted([call("write_plan", plan, reasoning="Look at median first."),
                       call("submit", {}, reasoning="Done.")])
    cfg = config(server.url, planner__thinking=True, executor__thinking=False)
    result, events = episode(cfg, repo, tmp_path / "run")
    assert result.reason == "submitted"
    assert [r["chat_template_kwargs"]["enable_thinking"] for r in server.requests] == [True, False]
    assert [e.reasoning for e in of_type(events, "model_response")] == ["Look at median first.", "Done."]
