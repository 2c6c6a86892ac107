"""Tool calls and thinking end to end, with a tiny checkpoint fitted to answer fixed conversations (conftest.py):
the engine generates the tokens, the server parses them, the official openai client reads the result.
"""
from __future__ import annotations

import json

from api_support import (MODEL, ROME_QUESTION, SUM_QUESTION, TOOLS, WEATHER_ANSWER, WEATHER_AFTER_TOOL,
                         WEATHER_QUESTION)


def test_tool_call_round_trip(trained_client):
    first = trained_client.chat.completions.create(model=MODEL, messages=WEATHER_QUESTION, tools=TOOLS,
                                                   temperature=0, max_tokens=64)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    # send the call and the tool's result back, as an agent does
    messages = WEATHER_QUESTION + [choice.message.model_dump(exclude_none=True),
                                   {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = trained_client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0,
                                                    max_tokens=64)
    assert second.choices[0].message.content == WEATHER_ANSWER
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.tool_calls is None
    # the history rendered from the client's message equals the one the model was fitted on
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == WEATHER_AFTER_TOOL[1]["tool_calls"][0]["function"]["arguments"]


def test_streamed_tool_call_arrives_whole_with_no_tag_text(trained_client):
    chunks = list(trained_client.chat.completions.create(model=MODEL, messages=WEATHER_QUESTION, tools=TOOLS,
                                                         temperature=0, max_tokens=64, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert content == ""
    assert [(tc.index, tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == \
        [(0, "get_weather", {"city": "Paris"})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_hides_the_tools_and_parses_nothing(trained_client):
    out = trained_client.chat.completions.create(model=MODEL, messages=WEATHER_QUESTION, tools=TOOLS,
                                                 tool_choice="none", temperature=0, max_tokens=24)
    assert out.choices[0].message.tool_calls is None and out.choices[0].finish_reason != "tool_calls"


def test_named_tool_choice_forces_that_call(trained_client):
    out = trained_client.chat.completions.create(
        model=MODEL, messages=ROME_QUESTION, tools=TOOLS, temperature=0, max_tokens=64,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    [call] = out.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Rome"}
    assert out.choices[0].finish_reason == "tool_calls"


def test_thinking_on_separates_reasoning_from_the_answer(trained_client):
    kwargs = dict(model=MODEL, messages=SUM_QUESTION, temperature=0, max_tokens=64,
                  extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    out = trained_client.chat.completions.create(**kwargs)
    message = out.choices[0].message
    assert message.reasoning_content == "The user wants a sum."
    assert message.content == "2 + 2 = 4."
    assert out.choices[0].finish_reason == "stop"

    chunks = list(trained_client.chat.completions.create(stream=True, **kwargs))
    reasoning = [getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks]
    content = [c.choices[0].delta.content or "" for c in chunks]
    assert "".join(reasoning) == message.reasoning_content and "".join(content) == message.content
    assert len([r for r in reasoning if r]) > 1  # streamed as it was generated, not in one piece
    assert not any("think>" in piece for piece in reasoning + content)


def test_thinking_off_answers_without_reasoning(trained_client):
    out = trained_client.chat.completions.create(model=MODEL, messages=SUM_QUESTION, temperature=0, max_tokens=16,
                                                 extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    message = out.choices[0].message
    assert getattr(message, "reasoning_content", None) is None
    assert message.content and "</think>" not in message.content
