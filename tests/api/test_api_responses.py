"""POST /v1/responses with the official openai client (and raw SSE checked event by event against the
client's own pydantic types): text, streaming, function tools, reasoning items, instructions, structured
output; against the random tiny checkpoint and the one fitted to answer fixed conversations."""
from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import TypeAdapter

from api_support import MODEL, SUM_QUESTION, TOOLS, WEATHER_ANSWER, WEATHER_QUESTION

HELLO = "Write a function that reverses a string."
WEATHER_TOOL = {"type": "function", **TOOLS[0]["function"]}  # the Responses API's flat tool shape


def sse_events(server, body: dict) -> list[dict]:
    with httpx.stream("POST", server.url + "/v1/responses", json={"model": MODEL, "stream": True, **body},
                      timeout=120) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    return [json.loads(line[len("data: "):]) for line in lines]


def check_event_stream(events: list[dict]) -> None:
    """Every event parses strictly as the openai client's ResponseStreamEvent, in OpenAI's order."""
    from openai.types.responses import ResponseStreamEvent

    adapter = TypeAdapter(ResponseStreamEvent)
    for event in events:
        parsed = adapter.validate_python(event)
        assert parsed.type == event["type"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    open_items: dict[int, str] = {}
    for e in events:  # items open and close in order, deltas only inside their open item
        if e["type"] == "response.output_item.added":
            assert e["output_index"] == len(open_items) or e["output_index"] not in open_items
            open_items[e["output_index"]] = e["item"]["id"]
        elif "item_id" in e:
            assert open_items[e["output_index"]] == e["item_id"]
    final = events[-1]["response"]
    assert [item["id"] for item in final["output"]] == [open_items[i] for i in sorted(open_items)]


def test_text_response_equals_the_chat_answer(client):
    out = client.responses.create(model=MODEL, input=HELLO, instructions="Answer in Python.", temperature=0,
                                  max_output_tokens=12)
    chat = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=12, messages=[
        {"role": "system", "content": "Answer in Python."}, {"role": "user", "content": HELLO}])
    assert out.object == "response" and out.id.startswith("resp_") and out.model == MODEL
    assert out.output_text == (chat.choices[0].message.content or "")
    assert out.usage.input_tokens == chat.usage.prompt_tokens
    assert out.usage.output_tokens == chat.usage.completion_tokens
    assert out.usage.total_tokens == out.usage.input_tokens + out.usage.output_tokens
    if chat.choices[0].finish_reason == "length":
        assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"
    else:
        assert out.status == "completed"
    [message] = out.output
    assert message.type == "message" and message.role == "assistant" and message.content[0].type == "output_text"


def test_streamed_events_parse_and_add_up_to_the_response(client, tiny_server):
    body = {"input": [{"role": "user", "content": [{"type": "input_text", "text": HELLO}]}], "temperature": 0,
            "max_output_tokens": 12}
    events = sse_events(tiny_server, body)
    check_event_stream(events)
    whole = client.responses.create(model=MODEL, **body)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == whole.output_text
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == whole.output_text
    # the client's typed stream and its accumulating helper read the same events
    typed = list(client.responses.create(model=MODEL, stream=True, **body))
    assert [e.type for e in typed] == [e["type"] for e in events]


def test_function_tool_round_trip(trained_client, trained_server):
    first = trained_client.responses.create(model=MODEL, input=WEATHER_QUESTION, tools=[WEATHER_TOOL],
                                            temperature=0, max_output_tokens=64)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id.startswith("call_")
    assert first.status == "completed"

    second = trained_client.responses.create(
        model=MODEL, tools=[WEATHER_TOOL], temperature=0, max_output_tokens=64,
        input=WEATHER_QUESTION + [call.model_dump(exclude_none=True),
                                  {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}])
    assert second.output_text == WEATHER_ANSWER

    events = sse_events(trained_server, {"input": WEATHER_QUESTION, "tools": [WEATHER_TOOL], "temperature": 0,
                                         "max_output_tokens": 64})
    check_event_stream(events)
    args = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [json.loads(e["arguments"]) for e in args] == [{"city": "Paris"}]
    # the client's accumulating stream helper (strict about item identities and order) agrees
    with trained_client.responses.stream(model=MODEL, input=WEATHER_QUESTION, tools=[WEATHER_TOOL], temperature=0,
                                         max_output_tokens=64) as stream:
        final = stream.get_final_response()
    assert [(i.type, i.name, i.arguments) for i in final.output] == [("function_call", call.name, call.arguments)]


def test_reasoning_item_in_thinking_mode(trained_client, trained_server):
    out = trained_client.responses.create(model=MODEL, input=SUM_QUESTION, reasoning={"effort": "high"},
                                          temperature=0, max_output_tokens=64)
    reasoning, message = out.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "The user wants a sum."
    assert message.type == "message" and out.output_text == "2 + 2 = 4."
    assert 0 < out.usage.output_tokens_details.reasoning_tokens < out.usage.output_tokens

    events = sse_events(trained_server, {"input": SUM_QUESTION, "reasoning": {"effort": "high"}, "temperature": 0,
                                         "max_output_tokens": 64})
    check_event_stream(events)
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert streamed == "The user wants a sum."
    assert len([e for e in events if e["type"] == "response.reasoning_text.delta"]) > 1
    with trained_client.responses.stream(model=MODEL, input=SUM_QUESTION, reasoning={"effort": "high"},
                                         temperature=0, max_output_tokens=64) as stream:
        final = stream.get_final_response()
    assert final.output_text == "2 + 2 = 4." and final.output[0].content[0].text == "The user wants a sum."

    # the items go back as input of the next turn (the reasoning renders as the assistant's think block)
    follow = trained_client.responses.create(
        model=MODEL, max_output_tokens=4, temperature=0,
        input=SUM_QUESTION + [item.model_dump(exclude_none=True) for item in out.output]
        + [{"role": "user", "content": "And 3+3?"}])
    assert follow.status in ("completed", "incomplete")


def test_named_tool_choice_and_json_format_parse_with_a_random_model(client, tiny_server):
    trip = {"type": "object", "additionalProperties": False, "required": ["days"],
            "properties": {"days": {"type": "integer"}}}
    out = client.responses.create(model=MODEL, input="Book it.", temperature=1.0, extra_body={"seed": 3},
                                  tools=[{"type": "function", "name": "book", "parameters": trip}],
                                  tool_choice={"type": "function", "name": "book"})
    [call] = out.output
    assert call.name == "book" and isinstance(json.loads(call.arguments)["days"], int)
    fmt = client.responses.create(model=MODEL, input="Book it.", temperature=1.0, extra_body={"seed": 4},
                                  text={"format": {"type": "json_schema", "name": "trip", "schema": trip}})
    assert isinstance(json.loads(fmt.output_text)["days"], int)
    events = sse_events(tiny_server, {"input": "Book it.", "temperature": 1.0, "seed": 3, "tool_choice": "required",
                                      "tools": [{"type": "function", "name": "book", "parameters": trip}],
                                      "parallel_tool_calls": False})
    check_event_stream(events)
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["function_call"]


def test_logprobs_in_output_text(client):
    out = client.responses.create(model=MODEL, input=HELLO, temperature=0, max_output_tokens=5, top_logprobs=2)
    part = out.output[0].content[0]
    assert part.logprobs and all(len(lp.top_logprobs) == 2 for lp in part.logprobs)
    assert "".join(lp.token for lp in part.logprobs) == part.text


def test_previous_response_id_is_refused_clearly(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_123")
    assert err.value.body["param"] == "previous_response_id" and "does not store responses" in err.value.message
