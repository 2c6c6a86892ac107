"""litellm (what mini-swe-agent and aider use) against the real server on loopback, as an OpenAI-compatible
provider (``openai/<name>`` with ``api_base``): a context overflow is its ContextWindowExceededError, and
structured outputs, forced tool calls, n, logprobs, logit_bias, reasoning_effort, legacy functions,
batched text completions and the Responses API work through it."""
from __future__ import annotations

import json
import os

import pytest

from api_support import MODEL, ROME_QUESTION, SUM_QUESTION, TOOLS, WEATHER_ANSWER, WEATHER_QUESTION

QUESTION = [{"role": "user", "content": "Plan a trip."}]
TRIP = {"type": "object", "additionalProperties": False, "required": ["days", "train"],
        "properties": {"days": {"type": "integer"}, "train": {"type": "boolean"}}}
LONG = [{"role": "user", "content": "x " * 3000}]


@pytest.fixture(scope="module")
def litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of its price list
    import litellm

    return litellm


@pytest.fixture
def tiny(tiny_server):
    return dict(model="openai/" + MODEL, api_base=tiny_server.url + "/v1", api_key="unused", num_retries=0)


@pytest.fixture
def trained(trained_server):
    return dict(model="openai/" + MODEL, api_base=trained_server.url + "/v1", api_key="unused", num_retries=0)


def test_context_overflow_is_context_window_exceeded(litellm, tiny):
    for stream in (False, True):
        with pytest.raises(litellm.ContextWindowExceededError, match="maximum context length is 1024 tokens"):
            litellm.completion(messages=LONG, stream=stream, **tiny)
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.text_completion(prompt="x " * 3000, **tiny)
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.responses(input="x " * 3000, **tiny)


def test_structured_output_and_named_tool_call(litellm, tiny):
    out = litellm.completion(messages=QUESTION, temperature=1.0, seed=1, n=8, **tiny,
                             response_format={"type": "json_schema",
                                              "json_schema": {"name": "trip", "schema": TRIP, "strict": True}})
    for choice in out.choices:
        answer = json.loads(choice.message.content)
        assert isinstance(answer["days"], int) and isinstance(answer["train"], bool)
    tool = {"type": "function", "function": {"name": "book", "parameters": TRIP}}
    out = litellm.completion(messages=QUESTION, temperature=1.0, seed=2, n=8, tools=[tool], **tiny,
                             tool_choice={"type": "function", "function": {"name": "book"}})
    for choice in out.choices:
        [call] = choice.message.tool_calls
        assert call.function.name == "book" and set(json.loads(call.function.arguments)) == {"days", "train"}
        assert choice.finish_reason == "tool_calls"


def test_n_logprobs_and_logit_bias(litellm, tiny, tiny_server):
    a = tiny_server.engine.tokenizer.decode([300])
    out = litellm.completion(messages=QUESTION, max_tokens=4, temperature=0, n=2, logprobs=True, top_logprobs=2,
                             logit_bias={"300": 8}, **tiny)
    assert len(out.choices) == 2
    for choice in out.choices:
        assert choice.message.content == a * 4
        assert [e.token for e in choice.logprobs.content] == [a] * 4
    out = litellm.completion(messages=QUESTION, max_tokens=12, temperature=0, logit_bias={"300": 8},
                             frequency_penalty=2.0, **tiny)
    assert out.choices[0].message.content.startswith(a * 4) and out.choices[0].message.content != a * 12


def test_reasoning_effort_and_legacy_functions(litellm, trained):
    out = litellm.completion(messages=SUM_QUESTION, temperature=0, max_tokens=64, reasoning_effort="high", **trained)
    assert out.choices[0].message.reasoning_content == "The user wants a sum."
    assert out.choices[0].message.content == "2 + 2 = 4."
    out = litellm.completion(messages=ROME_QUESTION, temperature=0, max_tokens=64, functions=[TOOLS[0]["function"]],
                             function_call={"name": "get_weather"}, **trained)
    call = out.choices[0].message.function_call
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Rome"}


def test_batched_text_completion(litellm, tiny):
    out = litellm.text_completion(prompt=["def add(a, b):", "class Stack:"], max_tokens=3, temperature=0, **tiny)
    single = litellm.text_completion(prompt="class Stack:", max_tokens=3, temperature=0, **tiny)
    assert [c.index for c in out.choices] == [0, 1] and out.choices[1].text == single.choices[0].text


def test_responses_api_tool_round_trip_and_stream(litellm, trained):
    tool = {"type": "function", **TOOLS[0]["function"]}
    first = litellm.responses(input=WEATHER_QUESTION, tools=[tool], temperature=0, max_output_tokens=64, **trained)
    [call] = first.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    second = litellm.responses(
        input=WEATHER_QUESTION + [{"type": "function_call", "call_id": call.call_id, "name": call.name,
                                   "arguments": call.arguments},
                                  {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
        tools=[tool], temperature=0, max_output_tokens=64, **trained)
    assert second.output[0].content[0].text == WEATHER_ANSWER
    events = list(litellm.responses(input=SUM_QUESTION, reasoning={"effort": "high"}, temperature=0,
                                    max_output_tokens=64, stream=True, **trained))
    types = [getattr(e, "type", None) for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if getattr(e, "type", None) == "response.output_text.delta") == "2 + 2 = 4."
