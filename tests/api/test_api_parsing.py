"""Server pieces that need no engine: output parsers, detokenizer, stop strings, prompts, metrics text."""
from __future__ import annotations

import json
import random

import pytest

from loopcoder.model_server.api.detokenizer import IncrementalDetokenizer, StopStringMatcher, partial_suffix_len
from loopcoder.model_server.api.errors import BadRequest
from loopcoder.model_server.api.metrics import ServerMetrics
from loopcoder.model_server.api.output_parsers import (ChatOutputParser, ReasoningParser, ToolCallParser,
                                                       parse_tool_call_json)
from loopcoder.model_server.api.prompts import completion_prompt_ids, render_chat
from loopcoder.model_server.api.protocol import ChatCompletionRequest, CompletionRequest
from loopcoder.model_server.engine.types import EngineStats
from loopcoder.model_server.plt.tokenizer import ASSET_DIR, load_tokenizer

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ASSET_DIR)


def pieces_of(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(len(text) + 1), rng.randint(0, min(12, len(text)))))
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def stream(parser, pieces):
    reasoning, content, calls, seen = "", "", [], []
    for piece in pieces:
        r, c, k = parser.push(piece)
        reasoning, content, calls = reasoning + r, content + c, calls + k
        seen += [r, c]
    r, c, k = parser.finish()
    seen += [r, c]
    return reasoning + r, content + c, [(x.name, x.arguments) for x in calls + k], seen


# -- tool calls ---------------------------------------------------------------------------------------------

def test_tool_call_blocks_become_calls_with_json_string_arguments():
    text = ('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "search", "arguments": {"q": "été", "n": 3}}\n</tool_call>')
    reasoning, content, calls = ChatOutputParser(False, True).parse(text)
    assert reasoning == "" and content == "Let me look."
    assert [c.name for c in calls] == ["get_weather", "search"]
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert json.loads(calls[1].arguments) == {"q": "été", "n": 3}
    assert calls[0].id != calls[1].id and calls[0].id.startswith("call_")


def test_malformed_tool_call_stays_content_and_does_not_crash():
    for block in ['{"name": "f", "arguments": {oops}}', "[1, 2]", '{"arguments": {}}', '{"name": ""}',
                  '{"name": "f", "arguments": "not json"}']:
        text = f"before <tool_call>{block}</tool_call> after"
        _, content, calls = ChatOutputParser(False, True).parse(text)
        assert calls == [] and content == text


def test_unclosed_tool_call_is_parsed_if_complete_json_else_kept():
    _, content, calls = ChatOutputParser(False, True).parse('<tool_call>\n{"name": "f", "arguments": {}}\n')
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("f", "{}")]
    _, content, calls = ChatOutputParser(False, True).parse('<tool_call>\n{"name": "f", "argu')
    assert calls == [] and content == '<tool_call>\n{"name": "f", "argu'


def test_string_arguments_are_kept_and_parameters_alias_accepted():
    call = parse_tool_call_json('{"name": "f", "arguments": "{\\"a\\": 1}"}')
    assert call.arguments == '{"a": 1}'
    assert parse_tool_call_json('{"name": "f", "parameters": {"a": 1}}').arguments == '{"a": 1}'


def test_tools_off_passes_tags_through_and_max_calls_drops_extra_calls():
    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "g"}</tool_call>'
    assert ChatOutputParser(False, False).parse(text)[1] == text
    _, content, calls = ChatOutputParser(False, True, max_calls=1).parse(text)
    assert content == "" and [c.name for c in calls] == ["f"]


def test_text_without_calls_is_returned_exactly():
    for text in ["plain answer\n", "  spaces  ", "a <tool_ca", "<tool_response>x</tool_response>", "\n\n"]:
        assert ChatOutputParser(False, True).parse(text)[1] == text


# -- reasoning ----------------------------------------------------------------------------------------------

def test_thinking_mode_output_starts_inside_think():
    reasoning, content, _ = ChatOutputParser(True, False).parse("The user wants a sum.\n</think>\n\n2 + 2 = 4.")
    assert (reasoning, content) == ("The user wants a sum.", "2 + 2 = 4.")


def test_unfinished_thinking_is_all_reasoning_and_no_thinking_is_all_content():
    assert ChatOutputParser(True, False).parse("still thinking...\n")[:2] == ("still thinking...", "")
    assert ChatOutputParser(False, False).parse("just an answer")[:2] == ("", "just an answer")


def test_think_block_recognised_only_at_the_start_when_not_in_thinking_mode():
    assert ChatOutputParser(False, False).parse("\n<think>hmm</think>\n\nok")[:2] == ("hmm", "ok")
    text = "answer mentioning <think> tags </think> later"
    assert ChatOutputParser(False, False).parse(text)[:2] == ("", text)


def test_reasoning_then_tool_call():
    text = 'I need the weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    reasoning, content, calls = ChatOutputParser(True, True).parse(text)
    assert reasoning == "I need the weather." and content == "" and calls[0].name == "get_weather"


# -- streaming == whole, and no partial tags in deltas ------------------------------------------------------

STREAM_CASES = [
    (True, True, 'Think <a> b.\n</think>\n\nSure.\n<tool_call>\n{"name": "f", "arguments": {"a": "</tool_call>?"}}'),
    (True, True, 'r\n</think>\n\nx <tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>\n'
                 '<tool_call>{"name": "g", "arguments": {}}</tool_call> tail'),
    (False, True, "<tool_call>\n{broken}\n</tool_call>\n<tool_call>{\"name\": \"h\"}</tool_call>"),
    (False, False, "<think>x</think>\n\nanswer with </think> inside"),
    (True, False, "never closed  \n  "),
    (False, True, "text then a partial tag <tool_c"),
]


@pytest.mark.parametrize("in_think,tools,text", STREAM_CASES)
def test_streamed_pieces_give_the_same_result_as_whole_text(in_think, tools, text):
    whole = ChatOutputParser(in_think, tools).parse(text)
    expected = (whole[0], whole[1], [(c.name, c.arguments) for c in whole[2]])
    rng = random.Random(0)
    for _ in range(200):
        reasoning, content, calls, _ = stream(ChatOutputParser(in_think, tools), pieces_of(text, rng))
        assert (reasoning, content, calls) == expected


def test_streamed_deltas_never_contain_partial_tags():
    text = 'abc\n</think>\n\nok <tool_call>{"name": "f", "arguments": {}}</tool_call>'
    for size in (1, 2, 3, 5):
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        _, content, calls, seen = stream(ChatOutputParser(True, True), pieces)
        assert content == "ok" and calls == [("f", "{}")]
        for delta in seen:
            assert "<" not in delta and ">" not in delta, (size, delta)


def test_reasoning_parser_holds_back_a_partial_end_tag():
    p = ReasoningParser(starts_in_think=True)
    assert p.push("abc</thi") == ("abc", "")
    assert p.push("nk>\n\nanswer") == ("", "answer")


def test_tool_parser_holds_back_a_partial_start_tag():
    p = ToolCallParser()
    assert p.push("hello <tool") == ("hello", [])
    content, calls = p.push('_call>{"name": "f"}</tool_call>')
    assert content == "" and [c.name for c in calls] == ["f"]


# -- detokenizer and stop strings ---------------------------------------------------------------------------

def test_incremental_detokenizer_matches_full_decode_with_multibyte_text(tok):
    text = "naïve café ☕ — 日本語 emoji 🎉 end"
    ids = tok(text, add_special_tokens=False).input_ids
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.push([i]) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)


def test_detokenizer_hides_ids_and_keeps_markup(tok):
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    think = tok.convert_tokens_to_ids("<think>")
    ids = [think] + tok("x = 1", add_special_tokens=False).input_ids + [eos]
    detok = IncrementalDetokenizer(tok, hidden_ids={eos})
    assert detok.push(ids) + detok.flush() == "<think>x = 1"


def test_stop_string_truncates_at_first_match_across_pieces():
    m = StopStringMatcher(["STOP", "\n\n"])
    out = m.push("abc ST") + m.push("O") + m.push("P more")
    assert out == "abc " and m.stopped
    m = StopStringMatcher(["xyz"])
    assert m.push("ab xy") == "ab " and m.push("w") == "xyw" and m.flush() == ""
    m = StopStringMatcher(["long stop", "op"])  # the match that starts first wins
    assert m.push("a long st") + m.push("op") == "a " and m.stopped
    m = StopStringMatcher(["long stop", "g s"])
    assert m.push("a lon") + m.push("g st") == "a lon" and m.stopped


def test_partial_suffix_len():
    assert partial_suffix_len("hello <tool_ca", ["<tool_call>"]) == 8
    assert partial_suffix_len("hello", ["<tool_call>"]) == 0
    assert partial_suffix_len("a<", ["<think>", "</think>"]) == 1


# -- prompts ------------------------------------------------------------------------------------------------

def chat(**fields):
    return ChatCompletionRequest(model="m", **fields)


def test_chat_prompt_offers_tools_and_thinking_switch(tok):
    msgs = [{"role": "user", "content": "hi"}]
    with_tools = render_chat(tok, chat(messages=msgs, tools=TOOLS))
    assert '"name": "get_weather"' in with_tools.text and with_tools.parse_tools
    assert with_tools.token_ids == tok(with_tools.text, add_special_tokens=False).input_ids
    off = render_chat(tok, chat(messages=msgs))
    on = render_chat(tok, chat(messages=msgs, chat_template_kwargs={"enable_thinking": True}))
    assert off.text.endswith("<think>\n\n</think>\n\n") and not off.starts_in_think
    assert on.text.endswith("<think>\n") and on.starts_in_think
    assert "<tools>" not in off.text and not off.parse_tools


@pytest.mark.parametrize("fields", [
    {}, {"chat_template_kwargs": {"enable_thinking": True}}, {"tools": TOOLS, "tool_choice": "required"},
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "search"}}}],
    ids=["thinking-off", "thinking-on", "required", "named"])
def test_history_tokens_are_what_the_next_turn_shares(tok, fields):
    """history_tokens: the prompt's leading tokens that render the messages alone; the next turn (the answer
    and a tool result appended) starts with exactly those, and the fallback that compares whole token lists
    (a generation prompt that does not split cleanly) gives the same number."""
    msgs = [{"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "median is wrong"}]
    first = render_chat(tok, chat(messages=msgs, **fields), history=True)
    assert render_chat(tok, chat(messages=msgs, **fields)).history_tokens == 0  # only when asked
    assert tok.decode(first.token_ids[first.history_tokens:]).startswith("<|im_start|>assistant")
    call = {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}
    following = msgs + [{"role": "assistant", "content": None, "tool_calls": [call]},
                        {"role": "tool", "tool_call_id": "c1", "content": "stats.py:3: def median(xs):"}]
    nxt = render_chat(tok, chat(messages=following, **fields))
    assert nxt.token_ids[:first.history_tokens] == first.token_ids[:first.history_tokens]
    fallback = render_chat(_Mismatching(tok), chat(messages=msgs, **fields), history=True)
    assert fallback.token_ids == first.token_ids and fallback.history_tokens == first.history_tokens


class _Mismatching:
    """The test tokenizer, but tokenizing a short text (the generation prompt alone) gives other ids, so
    render_chat must fall back to comparing the history's tokens with the prompt's."""

    def __init__(self, tok):
        self._tok = tok
        self.chat_template = tok.chat_template

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def apply_chat_template(self, *args, **kwargs):
        return self._tok.apply_chat_template(*args, **kwargs)

    def __call__(self, text, **kwargs):
        out = self._tok(text, **kwargs)
        if text.startswith("<|im_start|>assistant"):  # the generation prompt alone
            out["input_ids"] = [i + 1 for i in out["input_ids"]]
        return out


def test_tool_choice_none_required_and_named(tok):
    msgs = [{"role": "user", "content": "hi"}]
    none = render_chat(tok, chat(messages=msgs, tools=TOOLS, tool_choice="none"))
    assert "<tools>" not in none.text and not none.parse_tools
    required = render_chat(tok, chat(messages=msgs, tools=TOOLS, tool_choice="required"))
    assert required.text.endswith("</think>\n\n<tool_call>\n") and required.prefill == "<tool_call>\n"
    named = render_chat(tok, chat(messages=msgs, tools=TOOLS,
                                  tool_choice={"type": "function", "function": {"name": "search"}}))
    assert named.text.endswith('<tool_call>\n{"name": "search", "arguments": ')
    thinking = render_chat(tok, chat(messages=msgs, tools=TOOLS, tool_choice="required",
                                     chat_template_kwargs={"enable_thinking": True}))
    assert thinking.prefill == "</think>\n\n<tool_call>\n"
    reasoning, content, calls = ChatOutputParser(True, True).parse(thinking.prefill + '{"name": "f"}</tool_call>')
    assert (reasoning, content, [c.name for c in calls]) == ("", "", ["f"])


def test_history_with_tool_calls_and_results_renders(tok):
    msgs = [{"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "in Oslo?"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"}]
    text = render_chat(tok, chat(messages=msgs, tools=TOOLS)).text
    assert "<|im_start|>system\nBe brief." in text and "weather in Oslo?" in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in text
    assert "<tool_response>\nrain\n</tool_response>" in text


@pytest.mark.parametrize("fields,needle", [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "text content"),
    ({"messages": [{"role": "user", "content": None}]}, "needs content"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, "requires tools"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
      "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not in tools"),
    ({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"tools": []}}, "may not set"),
])
def test_bad_chat_requests_are_bad_request(tok, fields, needle):
    with pytest.raises(BadRequest, match=needle):
        render_chat(tok, chat(**fields))


@pytest.mark.parametrize("fields,param", [
    ({"top_logprobs": 2}, "top_logprobs"), ({"logit_bias": {"x": 5}}, "logit_bias"),
    ({"logit_bias": {"1": 500}}, "logit_bias"), ({"response_format": {"type": "json_schema"}},
                                                  "response_format.json_schema"),
    ({"functions": [{"name": "f"}], "tools": TOOLS}, "functions"), ({"function_call": "auto"}, "function_call"),
    ({"stop": [str(i) for i in range(17)]}, "stop"),
])
def test_values_the_server_cannot_honour_are_refused_naming_the_field(fields, param):
    req = chat(messages=[{"role": "user", "content": "x"}], **fields)
    with pytest.raises(BadRequest) as err:
        req.check_supported()
    assert err.value.param == param


def test_completion_prompts_text_ids_and_fim(tok):
    ids, text = completion_prompt_ids(tok, CompletionRequest(model="m", prompt="def f():"))
    assert ids == tok("def f():").input_ids and text == "def f():"
    assert completion_prompt_ids(tok, CompletionRequest(model="m", prompt=[[5, 6, 7]]))[0] == [5, 6, 7]
    fim, _ = completion_prompt_ids(tok, CompletionRequest(model="m", prompt="a = ", suffix="\nprint(a)"))
    assert tok.decode(fim).startswith("<|fim_prefix|>a = <|fim_suffix|>")
    for prompt in (["a", "b"], [len(tok) + 5], ""):
        with pytest.raises(BadRequest):
            completion_prompt_ids(tok, CompletionRequest(model="m", prompt=prompt))


# -- metrics ------------------------------------------------------------------------------------------------

def test_metrics_text_is_prometheus_exposition():
    m = ServerMetrics()
    m.record_http("/v1/chat/completions", 200)
    m.record_http("/v1/chat/completions", 400)
    m.record_finish("stop", 0.3)
    m.record_first_token(0.02)
    text = m.render(EngineStats(1, 2, 3, 10, 100, 50, 7, 1, 99, preemptions_total=4))
    assert 'loopcoder_http_requests_total{path="/v1/chat/completions",status="400"} 1' in text
    assert 'loopcoder_request_latency_seconds_bucket{le="0.5"} 1' in text
    assert 'loopcoder_request_latency_seconds_bucket{le="0.25"} 0' in text
    assert "loopcoder_request_latency_seconds_count 1" in text
    assert "loopcoder_num_requests_running 2" in text and "loopcoder_kv_cache_usage_ratio 0.3" in text
    assert "loopcoder_generation_tokens_total 50" in text
    assert "# TYPE loopcoder_engine_preemptions_total counter" in text and "loopcoder_engine_preemptions_total 4" in text
    for line in text.strip().splitlines():
        assert line.startswith("# ") or len(line.rsplit(" ", 1)) == 2 and float(line.rsplit(" ", 1)[1]) >= 0
