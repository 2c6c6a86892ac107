"""The server end to end: the official openai client against a real uvicorn server on loopback, serving a
random-weight tiny checkpoint with the native engine. Greedy answers are compared with /v1/completions on
the same rendered prompt (raw text), so the checks do not depend on what random weights happen to say.
"""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from api_support import MODEL, start_server
from loopcoder.model_server.api.output_parsers import ChatOutputParser
from loopcoder.model_server.api.prompts import render_chat
from loopcoder.model_server.api.protocol import ChatCompletionRequest

HELLO = [{"role": "user", "content": "Write a function that reverses a string."}]


def raw_completion(client, prompt_text: str, max_tokens: int) -> str:
    out = client.completions.create(model=MODEL, prompt=prompt_text, max_tokens=max_tokens, temperature=0)
    return out.choices[0].text


def rendered(server, **fields):
    return render_chat(server.engine.tokenizer, ChatCompletionRequest(model=MODEL, **fields))


def metric(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_until_idle(server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while metric(server, "loopcoder_num_requests_running") or metric(server, "loopcoder_num_requests_waiting"):
        assert time.monotonic() < deadline, "requests still hold engine slots"
        time.sleep(0.05)


def test_models_and_health(client, tiny_server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(tiny_server.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_chat_greedy_answer_is_the_models_raw_continuation_with_usage(client, tiny_server):
    prompt = rendered(tiny_server, messages=HELLO)
    out = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    choice = out.choices[0]
    raw = raw_completion(client, prompt.text, 12)
    reasoning, content, calls = ChatOutputParser(False, False).parse(raw)
    assert choice.message.role == "assistant"
    assert choice.message.content == (content or None) and choice.message.tool_calls is None
    assert getattr(choice.message, "reasoning_content", None) == (reasoning or None)
    assert out.usage.prompt_tokens == len(prompt.token_ids)
    assert choice.finish_reason in ("length", "stop")
    if choice.finish_reason == "length":
        assert out.usage.completion_tokens == 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_streaming_chat_equals_non_streaming(client):
    kwargs = dict(model=MODEL, messages=HELLO, max_tokens=16, temperature=0)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == (whole.choices[0].message.content or "")
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert len({c.id for c in chunks}) == 1


def test_thinking_on_puts_the_answer_in_reasoning_and_off_in_content(client, tiny_server):
    for thinking in (True, False):
        prompt = rendered(tiny_server, messages=HELLO, chat_template_kwargs={"enable_thinking": thinking})
        assert prompt.starts_in_think is thinking
        out = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10, temperature=0,
                                             extra_body={"chat_template_kwargs": {"enable_thinking": thinking}})
        raw = raw_completion(client, prompt.text, 10)
        reasoning, content, _ = ChatOutputParser(thinking, False).parse(raw)
        message = out.choices[0].message
        assert (getattr(message, "reasoning_content", None), message.content) == (reasoning or None, content or None)
        if thinking and "</think>" not in raw:
            assert message.content is None and message.reasoning_content
        if not thinking and not raw.lstrip().startswith("<think>"):
            assert getattr(message, "reasoning_content", None) is None


def test_completions_endpoint_stream_echo_and_length(client):
    out = client.completions.create(model=MODEL, prompt="def reverse(s):", max_tokens=8, temperature=0)
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="def reverse(s):", max_tokens=8, temperature=0, stream=True))
    assert streamed == out.choices[0].text
    echoed = client.completions.create(model=MODEL, prompt="def reverse(s):", max_tokens=8, temperature=0, echo=True)
    assert echoed.choices[0].text == "def reverse(s):" + out.choices[0].text


def test_stop_string_truncates_and_reports_stop(client):
    raw = raw_completion(client, "import os\n", 24)
    stop = raw[len(raw) // 2: len(raw) // 2 + 3]
    assert stop.strip(), f"pick another prompt: {raw!r}"
    out = client.completions.create(model=MODEL, prompt="import os\n", max_tokens=24, temperature=0, stop=[stop])
    assert out.choices[0].text == raw[:raw.index(stop)]
    assert out.choices[0].finish_reason == "stop"
    chat = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0)
    text = chat.choices[0].message.content
    cut = text[len(text) // 2: len(text) // 2 + 3]
    streamed = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0,
                                              stop=cut, stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text[:text.index(cut)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_max_completion_tokens_seed_top_k_top_p(client):
    out = client.chat.completions.create(model=MODEL, messages=HELLO, max_completion_tokens=5, temperature=0)
    assert out.usage.completion_tokens == 5 and out.choices[0].finish_reason == "length"
    greedy = raw_completion(client, "class Stack:", 10)

    def sample(**kw):
        return client.completions.create(model=MODEL, prompt="class Stack:", max_tokens=10, **kw).choices[0].text

    assert sample(temperature=1.0, seed=7) == sample(temperature=1.0, seed=7)
    assert sample(temperature=1.0, seed=7) != sample(temperature=1.0, seed=8)
    assert sample(temperature=1.0, seed=3, extra_body={"top_k": 1}) == greedy
    assert sample(temperature=1.0, seed=3, top_p=1e-6) == greedy


@pytest.mark.parametrize("kwargs,needle", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ({"messages": HELLO, "n": 200}, "less than or equal to 128"),
    ({"messages": HELLO, "logprobs": True, "top_logprobs": 30}, "top_logprobs"),
    ({"messages": HELLO, "temperature": -1}, "temperature"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"messages": HELLO, "tool_choice": "required"}, "tool_choice requires tools"),
    ({"messages": [{"role": "user", "content": "x " * 3000}]}, "context"),
])
def test_bad_input_is_a_400_with_a_message(client, kwargs, needle):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, **kwargs)
    assert err.value.status_code == 400 and needle in err.value.message


def test_other_errors_unknown_model_bad_json_bad_token(client, tiny_server):
    with pytest.raises(openai.NotFoundError, match="tiny-plt"):
        client.chat.completions.create(model="gpt-4", messages=HELLO)
    r = httpx.post(tiny_server.url + "/v1/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="prompt token ids"):
        client.completions.create(model=MODEL, prompt=[10 ** 6])


def test_32_concurrent_requests_are_all_answered(tiny_server):
    async def run():
        client = openai.AsyncOpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        prompts = [[{"role": "user", "content": f"Task {i}: sort a list of {i} numbers."}] for i in range(32)]

        async def one(i):
            if i % 2:
                out = await client.chat.completions.create(model=MODEL, messages=prompts[i], max_tokens=8,
                                                           temperature=0)
                return out.choices[0].finish_reason, out.usage.completion_tokens
            stream = await client.chat.completions.create(model=MODEL, messages=prompts[i], max_tokens=8,
                                                          temperature=0.8, seed=i, stream=True,
                                                          stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            return [c for c in chunks if c.choices][-1].choices[0].finish_reason, chunks[-1].usage.completion_tokens

        try:
            return await asyncio.gather(*(one(i) for i in range(32)))
        finally:
            await client.close()

    results = asyncio.run(run())
    assert len(results) == 32
    for reason, tokens in results:
        assert reason in ("stop", "length") and 1 <= tokens <= 8
    wait_until_idle(tiny_server)


def test_client_disconnect_frees_the_slot(tiny_server):
    aborted = metric(tiny_server, "loopcoder_engine_requests_aborted_total")
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 900, "temperature": 0, "ignore_eos": True}
    # streaming: read the first event, then hang up
    with httpx.stream("POST", tiny_server.url + "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        next(r.iter_lines())
    # not streaming: give up waiting
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    wait_until_idle(tiny_server)
    assert metric(tiny_server, "loopcoder_engine_requests_aborted_total") >= aborted + 2
    assert metric(tiny_server, "loopcoder_client_disconnects_total") >= 2


def test_metrics_count_requests_and_tokens(client, tiny_server):
    before = metric(tiny_server, "loopcoder_generation_tokens_total")
    client.completions.create(model=MODEL, prompt="x = ", max_tokens=4, temperature=0)
    text = httpx.get(tiny_server.url + "/metrics").text
    assert metric(tiny_server, "loopcoder_generation_tokens_total") >= before + 4
    assert 'loopcoder_http_requests_total{path="/v1/completions",status="200"}' in text
    assert "# TYPE loopcoder_time_to_first_token_seconds histogram" in text


@pytest.fixture(scope="module")
def one_slot_server(tiny_checkpoint):
    # a long context, so that one request can hold the only slot for many seconds
    server = start_server(tiny_checkpoint, max_model_len=32768, max_num_seqs=1, max_waiting=1)
    yield server
    server.stop()


def test_full_queue_answers_429(one_slot_server):
    async def run():
        client = openai.AsyncOpenAI(base_url=one_slot_server.url + "/v1", api_key="unused", max_retries=0,
                                    timeout=300)
        try:
            return await asyncio.gather(*(client.completions.create(model=MODEL, prompt="def f(", max_tokens=256,
                                                                    temperature=0) for _ in range(6)),
                                        return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(run())
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    answered = [r for r in results if not isinstance(r, Exception)]
    assert refused and answered and len(refused) + len(answered) == 6
    assert refused[0].status_code == 429 and "busy" in refused[0].message
    assert json.loads(refused[0].response.text)["error"]["type"] == "rate_limit_error"
    assert refused[0].response.headers["retry-after"] == "1"


def test_client_that_leaves_while_queued_is_dropped_from_the_queue(one_slot_server):
    server = one_slot_server
    wait_until_idle(server)
    aborted = metric(server, "loopcoder_engine_requests_aborted_total")
    body = {"model": MODEL, "prompt": "def f(", "max_tokens": 900, "temperature": 0}
    holder = {**body, "stream": True, "ignore_eos": True, "max_tokens": 32000}
    with httpx.stream("POST", server.url + "/v1/completions", json=holder) as running:
        lines = running.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)  # this request holds the only slot
        for stream in (False, True):  # these wait in the queue until their client gives up
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(server.url + "/v1/completions", json={**body, "stream": stream},
                           timeout=httpx.Timeout(30, read=0.3))
            deadline = time.monotonic() + 30
            while metric(server, "loopcoder_num_requests_waiting"):
                assert time.monotonic() < deadline, "the abandoned request still waits for a slot"
                time.sleep(0.05)
            assert metric(server, "loopcoder_num_requests_running") == 1
        assert metric(server, "loopcoder_engine_requests_aborted_total") == aborted + 2
    wait_until_idle(server)
