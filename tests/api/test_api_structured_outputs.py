"""Structured outputs and grammar-forced tool calls, with the official openai client against a real server
serving the tiny RANDOM checkpoint at temperature 1: whatever the weights say, the answers must parse.

The schemas bound their strings (maxLength): a random model closes a JSON string only by chance, and an
unbounded string would run into max_tokens (then no grammar can make the answer whole).
"""
from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import BaseModel, ConfigDict

from api_support import MODEL, start_server
from loopcoder.model_server.api.output_parsers import ChatOutputParser
from loopcoder.model_server.api.prompts import render_chat
from loopcoder.model_server.api.protocol import ChatCompletionRequest

QUESTION = [{"role": "user", "content": "Plan a trip: which city, how many days, by train or not?"}]
TRIP = {"type": "object", "additionalProperties": False, "required": ["city", "days", "train"],
        "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"},
                       "train": {"type": "boolean"}}}
BOOK = {"type": "function", "function": {"name": "book_trip", "description": "Book a trip", "parameters": TRIP}}
ALARM = {"type": "function", "function": {"name": "set_alarm", "parameters": {
    "type": "object", "additionalProperties": False, "required": ["hour"],
    "properties": {"hour": {"type": "integer"}, "label": {"type": "string", "maxLength": 8}}}}}
TOOL_CALL_TOKEN, THINK_END_TOKEN = 6, 11  # <tool_call> and </think> in the shipped tokenizer


@pytest.fixture(scope="module")
def wide_client(tiny_checkpoint):
    """A server whose batch holds 100 requests: the 100-answer tests decode in one batch."""
    server = start_server(tiny_checkpoint, max_model_len=512, max_num_seqs=100)
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=900)
    server.stop()


def valid_trip(obj) -> bool:
    # not len(city) <= 12: a random model writes byte sequences (UTF-8-encoded surrogates) that xgrammar
    # counts as one character and Python decodes as three U+FFFD (tests/engine checks the bound itself)
    return (isinstance(obj, dict) and set(obj) == {"city", "days", "train"} and isinstance(obj["city"], str)
            and isinstance(obj["days"], int) and isinstance(obj["train"], bool))


def test_json_schema_answers_parse_100_of_100_at_temperature_1(wide_client):
    out = wide_client.chat.completions.create(
        model=MODEL, messages=QUESTION, n=100, temperature=1.0, seed=1,
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": TRIP, "strict": True}})
    assert len(out.choices) == 100 and [c.index for c in out.choices] == list(range(100))
    answers = [json.loads(c.message.content) for c in out.choices]
    assert [a for a in answers if not valid_trip(a)] == []
    assert all(c.finish_reason == "stop" for c in out.choices)
    assert len({json.dumps(a, sort_keys=True) for a in answers}) > 50  # sampled, not one answer repeated


def test_named_tool_choice_calls_parse_100_of_100_at_temperature_1(wide_client):
    out = wide_client.chat.completions.create(
        model=MODEL, messages=QUESTION, n=100, temperature=1.0, seed=2, tools=[ALARM, BOOK],
        tool_choice={"type": "function", "function": {"name": "book_trip"}})
    for choice in out.choices:
        [call] = choice.message.tool_calls
        assert call.function.name == "book_trip" and valid_trip(json.loads(call.function.arguments))
        assert choice.finish_reason == "tool_calls" and choice.message.content is None


def test_without_the_grammar_the_random_model_never_parses(client, tiny_server):
    """What the two tests above got before constrained decoding: the same prompts, sampled raw."""
    tok = tiny_server.engine.tokenizer
    forced = render_chat(tok, ChatCompletionRequest(model=MODEL, messages=QUESTION, tools=[ALARM, BOOK],
                                                    tool_choice={"type": "function",
                                                                 "function": {"name": "book_trip"}}))
    raw = client.completions.create(model=MODEL, prompt=forced.text, n=20, temperature=1.0, seed=3, max_tokens=60)
    parsed = [ChatOutputParser(False, True).parse(forced.prefill + c.text)[2] for c in raw.choices]
    assert parsed == [[]] * 20
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, n=20, temperature=1.0, seed=3,
                                           max_tokens=60)
    for choice in plain.choices:
        with pytest.raises(json.JSONDecodeError):
            json.loads(choice.message.content or "")


def test_required_tool_choice_makes_one_valid_call_of_an_offered_tool(client):
    out = client.chat.completions.create(model=MODEL, messages=QUESTION, n=8, temperature=1.0, seed=4,
                                         tools=[ALARM, BOOK], tool_choice="required", parallel_tool_calls=False)
    for choice in out.choices:
        [call] = choice.message.tool_calls
        args = json.loads(call.function.arguments)
        assert call.function.name in ("set_alarm", "book_trip")
        assert valid_trip(args) if call.function.name == "book_trip" else isinstance(args["hour"], int)


def test_strict_tool_keeps_a_call_the_model_opens_on_its_own_valid(client):
    # logit_bias makes the random model open <tool_call> at once; only a strict tool's grammar then makes
    # the call whole (parallel_tool_calls false: the answer ends after it).
    strict = {"type": "function", "function": {**ALARM["function"], "strict": True}}
    kwargs = dict(model=MODEL, messages=QUESTION, temperature=1.0, seed=5, max_tokens=80,
                  logit_bias={str(TOOL_CALL_TOKEN): 100}, parallel_tool_calls=False)
    out = client.chat.completions.create(tools=[strict], **kwargs)
    [call] = out.choices[0].message.tool_calls
    assert call.function.name == "set_alarm" and isinstance(json.loads(call.function.arguments)["hour"], int)
    loose = client.chat.completions.create(tools=[ALARM], **kwargs).choices[0]
    assert loose.message.tool_calls is None and "<tool_call>" in loose.message.content


def test_sdk_parse_and_json_object(client):
    class Trip(BaseModel):
        model_config = ConfigDict(extra="forbid")
        days: int
        train: bool

    parsed = client.chat.completions.parse(model=MODEL, messages=QUESTION, temperature=1.0, seed=6,
                                           response_format=Trip)
    assert isinstance(parsed.choices[0].message.parsed, Trip)
    # json_object: any JSON object; max_tokens keeps an open-ended object from running long, and a
    # cut-off answer is the one way it may fail to parse
    out = client.chat.completions.create(model=MODEL, messages=QUESTION, n=6, temperature=0.7, seed=7,
                                         max_tokens=200, response_format={"type": "json_object"})
    done = [c for c in out.choices if c.finish_reason == "stop"]
    assert done and all(isinstance(json.loads(c.message.content), dict) for c in done)
    for c in out.choices:
        assert c.message.content.lstrip().startswith("{")


def test_thinking_mode_json_comes_after_the_reasoning(client):
    # the bias closes the think block at once (a random model would think for ever); the grammar then
    # requires the JSON in the content (where the biased </think> can only be string text)
    out = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=1.0, seed=8, logit_bias={str(THINK_END_TOKEN): 100},
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": TRIP}})
    message = out.choices[0].message
    assert getattr(message, "reasoning_content", None) is None
    assert message.content.startswith("{") and valid_trip(json.loads(message.content))


def test_streamed_structured_answer_equals_the_non_streamed_one(client):
    kwargs = dict(model=MODEL, messages=QUESTION, temperature=1.0, seed=9, tools=[BOOK],
                  tool_choice={"type": "function", "function": {"name": "book_trip"}})
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    [call] = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert call.function.name == "book_trip" and call.function.arguments == whole.function.arguments


@pytest.mark.parametrize("fields,param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "string", "pattern": "(unclosed"}}}}}], "tool_choice": "required"}, "tools"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
])
def test_grammars_that_cannot_compile_are_400_naming_the_field(tiny_server, fields, param):
    r = httpx.post(tiny_server.url + "/v1/chat/completions", timeout=60,
                   json={"model": MODEL, "messages": QUESTION, **fields})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model=MODEL, messages=QUESTION, **fields)
