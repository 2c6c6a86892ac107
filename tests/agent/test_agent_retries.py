"""Retries against a real loopback server that fails on purpose (429 + Retry-After, 500, a dropped connection,
an answer slower than the client's timeout), no retry on a 400, and the context-overflow path."""
import pytest

from loopcoder.agent.client import is_context_overflow

from agent_support import config, episode, of_type
from scripted_server import call

VIEW = call("view", {"path": "stats.py"})
SUBMIT = call("submit", {"summary": "done"})
OVERFLOW = {"status": 400, "message": "This model's maximum context length is 4096 tokens. However, you requested "
                                      "5000 tokens (4000 in the messages, 1000 in the completion)."}


def run(scripted, repo, tmp_path, script, **changes):
    server = scripted(script)
    result, events = episode(config(server.url, mode="single", **changes), repo, tmp_path / "run")
    return server, result, events


def test_429_waits_what_retry_after_asks(scripted, repo, tmp_path):
    server, result, events = run(scripted, repo, tmp_path, [{"status": 429, "retry_after": "1"}, SUBMIT])
    assert result.reason == "submitted" and len(server.requests) == 2
    assert server.times[1] - server.times[0] >= 1.0
    [retry] = of_type(events, "retry")
    assert (retry.attempt, retry.wait_s) == (1, 1.0) and retry.error.startswith("HTTP 429: scripted 429")


def test_retry_after_is_capped(scripted, repo, tmp_path):
    server, result, events = run(scripted, repo, tmp_path, [{"status": 429, "retry_after": "120"}, SUBMIT],
                                 model__backoff_max_s=0.3)
    assert result.reason == "submitted" and of_type(events, "retry")[0].wait_s == 0.3
    assert server.times[1] - server.times[0] < 5


@pytest.mark.parametrize("failure, error", [
    ({"status": 500}, "HTTP 500: scripted 500"),
    ({"status": 503, "retry_after": "0"}, "HTTP 503: scripted 503"),
    ({"drop": True}, "APIConnectionError"),
])
def test_server_errors_and_dropped_connections_are_retried(scripted, repo, tmp_path, failure, error):
    server, result, events = run(scripted, repo, tmp_path, [failure, failure, VIEW, SUBMIT])
    assert result.reason == "submitted" and len(server.requests) == 4
    retries = of_type(events, "retry")
    assert [r.attempt for r in retries] == [1, 2] and all(error in r.error for r in retries)
    assert result.stats["retries"] == 2


def test_an_answer_slower_than_the_timeout_is_retried(scripted, repo, tmp_path):
    server, result, events = run(scripted, repo, tmp_path, [dict(SUBMIT, delay=2.0), SUBMIT], model__timeout_s=0.5)
    assert result.reason == "submitted" and len(server.requests) == 2
    assert of_type(events, "retry")[0].error == "timed out"


def test_retries_are_bounded_then_the_episode_stops_with_model_error(scripted, repo, tmp_path):
    server, result, _ = run(scripted, repo, tmp_path, [{"status": 500}] * 5, model__max_attempts=3)
    assert result.reason == "model_error" and len(server.requests) == 3
    assert result.detail == "HTTP 500 from the model server: scripted 500"


def test_a_400_is_never_retried(scripted, repo, tmp_path):
    server, result, events = run(scripted, repo, tmp_path, [{"status": 400, "message": "unknown field 'foo'"}, SUBMIT])
    assert result.reason == "model_error" and len(server.requests) == 1 and not of_type(events, "retry")
    assert result.detail == "HTTP 400 from the model server: unknown field 'foo'"


def test_context_overflow_compacts_once_and_retries(scripted, repo, tmp_path):
    server, result, events = run(scripted, repo, tmp_path, [VIEW, VIEW, VIEW, OVERFLOW, SUBMIT])
    assert result.reason == "submitted" and len(server.requests) == 5
    [event] = of_type(events, "context")
    assert event.action == "compaction" and event.turns_replaced == 2
    refused, retried = server.requests[3]["messages"], server.requests[4]["messages"]
    assert len(retried) < len(refused)
    assert retried[2]["role"] == "user" and retried[2]["content"].startswith("Earlier turns, summarised")
    assert '- view({"path": "stats.py"}) -> stats.py (lines 1-20 of 20)' in retried[2]["content"]
    assert [r.step for r in of_type(events, "model_request")] == [1, 2, 3, 4, 4]  # the retry is the same step


def test_a_second_overflow_stops_with_context_exceeded_and_keeps_the_patch(scripted, repo, tmp_path):
    edit = call("str_replace", {"path": "stats.py", "old_str": "return ordered[middle]\n\n",
                                "new_str": "return (ordered[middle - 1] + ordered[middle]) / 2\n\n"})
    server, result, events = run(scripted, repo, tmp_path, [edit, OVERFLOW, OVERFLOW, SUBMIT])
    assert result.reason == "context_exceeded" and len(server.requests) == 3
    assert "maximum context length is 4096" in result.detail
    assert result.patch.files == ["stats.py"]


@pytest.mark.parametrize("message", [
    "the prompt is 5000 tokens; this model's context is 4096 tokens and at least one must be left to generate",
    "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens",
    "The input (5000 tokens) is longer than the model's context length (4096 tokens).",
    "Error code: context_length_exceeded",
])
def test_overflow_wording_of_native_vllm_sglang_and_openai(message):
    assert is_context_overflow(400, message)
    assert not is_context_overflow(500, message)
    assert not is_context_overflow(400, "temperature must be at most 2")
