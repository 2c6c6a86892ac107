"""What real clients send and expect beyond the basics: a context overflow they recognise, GET
/v1/models/{id}, explicit nulls, a ``param`` on every validation 400, ``reasoning_effort`` and the legacy
``functions`` (the official openai client and raw HTTP against real servers on loopback)."""
from __future__ import annotations

import json

import httpx
import openai
import pytest

from api_support import MODEL, ROME_QUESTION, SUM_QUESTION, TOOLS, WEATHER_QUESTION, start_server
from loopcoder.model_server.api.prompts import render_chat
from loopcoder.model_server.api.protocol import ChatCompletionRequest

HELLO = [{"role": "user", "content": "Write a function that reverses a string."}]
LONG = [{"role": "user", "content": "x " * 3000}]
OVERFLOW = "This model's maximum context length is 1024 tokens. However, you requested "


@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow_is_context_length_exceeded(client, tiny_server, stream):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=5, stream=stream)
    body = err.value.body
    assert body["code"] == "context_length_exceeded" and body["type"] == "invalid_request_error"
    assert body["param"] == "messages" and body["message"].startswith(OVERFLOW)
    prompt_tokens = len(render_chat(tiny_server.engine.tokenizer,
                                    ChatCompletionRequest(model=MODEL, messages=LONG)).token_ids)
    assert f"you requested {prompt_tokens + 5} tokens ({prompt_tokens} in the messages, 5 in the completion)" \
        in body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt="x " * 3000, stream=stream)
    assert err.value.body["code"] == "context_length_exceeded" and err.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="x " * 3000, stream=stream)
    assert err.value.body["code"] == "context_length_exceeded" and err.value.body["param"] == "input"


def test_engine_side_overflow_has_the_same_shape(tiny_checkpoint):
    """The engine's own limit (a smaller max_model_len than the server believes) maps the same way."""
    from loopcoder.model_server.api import ServerThread, create_app
    from loopcoder.model_server.engine import AsyncLLMEngine, EngineConfig

    engine = AsyncLLMEngine.from_config(EngineConfig(model=str(tiny_checkpoint), max_model_len=64))
    app = create_app(engine, served_model_name=MODEL)  # the server checks prompts against 64 tokens
    engine.engine.cfg = engine.engine.cfg.model_copy(update={"max_model_len": 32})
    with ServerThread(app) as server:
        r = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": list(range(20, 60)),
                                                            "max_tokens": 3}, timeout=60)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded" and r.json()["error"]["param"] == "prompt"
    assert r.json()["error"]["message"].startswith("This model's maximum context length is 32 tokens.")


def test_get_model_by_id(client, tiny_server):
    card = client.models.retrieve(MODEL)
    assert card.id == MODEL and card.object == "model"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4")
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"


def test_explicit_nulls_mean_defaults(tiny_server):
    nulls = dict(stream=None, n=None, parallel_tool_calls=None, temperature=None, top_p=None, stop=None, seed=None,
                 logprobs=None, top_logprobs=None, tools=None, tool_choice=None, stream_options=None,
                 response_format=None, user=None, presence_penalty=None, frequency_penalty=None, logit_bias=None,
                 reasoning_effort=None, functions=None, function_call=None, max_completion_tokens=None,
                 ignore_eos=None, skip_special_tokens=None, chat_template_kwargs=None)
    r = httpx.post(tiny_server.url + "/v1/chat/completions", timeout=60,
                   json={"model": MODEL, "messages": HELLO + [{"role": "assistant", "content": None,
                                                               "tool_calls": None, "name": None}],
                         "max_tokens": 3, **nulls})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion" and len(r.json()["choices"]) == 1
    r = httpx.post(tiny_server.url + "/v1/completions", timeout=60,
                   json={"model": MODEL, "prompt": "def f():", "max_tokens": None, "echo": None, "suffix": None,
                         "best_of": None, "logprobs": None, "stream": None, "n": None})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 16  # null max_tokens: the endpoint's default
    r = httpx.post(tiny_server.url + "/v1/responses", timeout=60,
                   json={"model": MODEL, "input": "hi", "max_output_tokens": 3, "instructions": None, "tools": None,
                         "tool_choice": None, "previous_response_id": None, "stream": None, "reasoning": None,
                         "text": None, "store": None, "metadata": None, "parallel_tool_calls": None})
    assert r.status_code == 200, r.text


def test_explicit_nulls_from_the_openai_client(client):
    # the client sends a None it is given as JSON null
    out = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3, stream=None, n=None,
                                         parallel_tool_calls=None, temperature=None, stop=None, seed=None,
                                         response_format=None, tool_choice=None, logprobs=None)
    assert len(out.choices) == 1 and out.choices[0].message.role == "assistant"


CHAT_400 = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"temperature": -1}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 0}, "n"),
    ({"stream": "yes please"}, "stream"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": {"999999": 1}}, "logit_bias"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"stop": [str(i) for i in range(17)]}, "stop"),
    ({"chat_template_kwargs": {"tools": []}}, "chat_template_kwargs"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"functions": [{"name": "f"}], "tools": TOOLS}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"messages": LONG}, "messages"),
]
COMPLETION_400 = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": [10 ** 6]}, "prompt"),
    ({"prompt": ["ok", ""]}, "prompt[1]"),
    ({"prompt": [5, 6], "suffix": "x"}, "suffix"),
    ({"prompt": "a", "suffix": "x", "echo": True}, "echo"),
    ({"prompt": "a", "best_of": 3}, "best_of"),
    ({"prompt": "a", "logprobs": 30}, "logprobs"),
]
RESPONSES_400 = [
    ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "image", "url": "x"}]}, "input[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
    ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"input": "hi", "tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi", "background": True}, "background"),
]


@pytest.mark.parametrize("path,fields,param", [("/v1/chat/completions", {"messages": HELLO, **f}, p) for f, p in CHAT_400]
                         + [("/v1/completions", f, p) for f, p in COMPLETION_400]
                         + [("/v1/responses", f, p) for f, p in RESPONSES_400])
def test_every_400_names_its_param_and_has_a_string_or_null_code(tiny_server, path, fields, param):
    r = httpx.post(tiny_server.url + path, json={"model": MODEL, **fields}, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["code"] is None or isinstance(error["code"], str)
    assert error["message"] and "Traceback" not in error["message"]


def test_bad_json_and_unknown_model_errors(tiny_server):
    r = httpx.post(tiny_server.url + "/v1/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] is None and r.json()["error"]["code"] is None
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json={"model": "gpt-4", "messages": HELLO})
    assert r.status_code == 404 and r.json()["error"] == {
        "message": "model 'gpt-4' is not served here; this server serves 'tiny-plt'", "type": "not_found_error",
        "param": "model", "code": "model_not_found"}


def test_overloaded_429_has_a_string_code(tiny_checkpoint):
    server = start_server(tiny_checkpoint, max_model_len=256, max_waiting=0)
    try:
        r = httpx.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": HELLO}, timeout=60)
    finally:
        server.stop()
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"


def test_reasoning_effort_turns_thinking_on(trained_client):
    out = trained_client.chat.completions.create(model=MODEL, messages=SUM_QUESTION, temperature=0, max_tokens=64,
                                                 reasoning_effort="high")
    assert out.choices[0].message.reasoning_content == "The user wants a sum."
    assert out.choices[0].message.content == "2 + 2 = 4."
    off = trained_client.chat.completions.create(model=MODEL, messages=SUM_QUESTION, temperature=0, max_tokens=16,
                                                 reasoning_effort="none")
    assert getattr(off.choices[0].message, "reasoning_content", None) is None
    # chat_template_kwargs wins over reasoning_effort
    kwargs_off = trained_client.chat.completions.create(
        model=MODEL, messages=SUM_QUESTION, temperature=0, max_tokens=16, reasoning_effort="high",
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert kwargs_off.choices[0].message.content == off.choices[0].message.content


def test_legacy_functions_are_tools_and_answer_with_function_call(trained_client):
    functions = [TOOLS[0]["function"]]
    out = trained_client.chat.completions.create(model=MODEL, messages=WEATHER_QUESTION, functions=functions,
                                                 temperature=0, max_tokens=64)
    choice = out.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Paris"}

    forced = trained_client.chat.completions.create(model=MODEL, messages=ROME_QUESTION, functions=functions,
                                                    function_call={"name": "get_weather"}, temperature=0,
                                                    max_tokens=64)
    assert json.loads(forced.choices[0].message.function_call.arguments) == {"city": "Rome"}

    chunks = list(trained_client.chat.completions.create(model=MODEL, messages=WEATHER_QUESTION,
                                                         functions=functions, temperature=0, max_tokens=64,
                                                         stream=True))
    calls = [c.choices[0].delta.function_call for c in chunks if c.choices and c.choices[0].delta.function_call]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert chunks[-1].choices[0].finish_reason == "function_call"


def test_legacy_function_messages_render_as_tool_messages(tiny_server):
    tok = tiny_server.engine.tokenizer
    legacy = ChatCompletionRequest(model=MODEL, functions=[TOOLS[0]["function"]], messages=WEATHER_QUESTION + [
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather",
                                                                 "arguments": '{"city": "Paris"}'}},
        {"role": "function", "name": "get_weather", "content": "sunny, 21 C"}])
    modern = ChatCompletionRequest(model=MODEL, tools=TOOLS, messages=WEATHER_QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"}])
    assert render_chat(tok, legacy.with_tools()).text == render_chat(tok, modern).text
