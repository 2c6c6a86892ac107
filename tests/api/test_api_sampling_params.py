"""n > 1, logprobs, penalties, logit_bias and batched completion prompts, with the official openai client
against a real server (random tiny checkpoint). Each result is checked against single requests or
against arithmetic the test can do itself, never against what the random weights happen to say."""
from __future__ import annotations

import math

import httpx

from api_support import MODEL

HELLO = [{"role": "user", "content": "Write a function that reverses a string."}]
A, B = 300, 301  # two ordinary tokens the bias tests push to the top


def test_n_choices_equal_single_requests_with_consecutive_seeds(client, tiny_server):
    kwargs = dict(model=MODEL, messages=HELLO, max_tokens=8, temperature=1.0)
    out = client.chat.completions.create(n=3, seed=40, **kwargs)
    assert [c.index for c in out.choices] == [0, 1, 2]
    singles = [client.chat.completions.create(seed=40 + i, **kwargs) for i in range(3)]
    assert [c.message.content for c in out.choices] == [s.choices[0].message.content for s in singles]
    assert out.usage.prompt_tokens == singles[0].usage.prompt_tokens  # the prompt counted once
    assert out.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)

    chunks = list(client.chat.completions.create(n=3, seed=40, stream=True, **kwargs))
    for i in range(3):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        assert text == (out.choices[i].message.content or "")
    finishes = sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason)
    assert finishes == [0, 1, 2]


def test_chat_logprobs_greedy_top_token_is_the_answer(client):
    out = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, temperature=0, logprobs=True,
                                         top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens or out.choices[0].finish_reason == "stop"
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token and entry.top_logprobs[0].logprob == entry.logprob
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs),
                                                                 reverse=True)
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1 + 1e-5
    text = bytes(b for entry in content for b in entry.bytes).decode("utf-8", "replace")
    assert text == out.choices[0].message.content
    # streamed: the same entries, spread over the chunks
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, temperature=0,
                                                 logprobs=True, top_logprobs=3, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
    plain = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2, temperature=0)
    assert plain.choices[0].logprobs is None


def test_completion_logprobs_and_text_offsets(client):
    out = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=5, temperature=0, logprobs=2)
    lp = out.choices[0].logprobs
    assert "".join(lp.tokens) == out.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) <= 2 and max(top.values()) == logprob and top[token] == logprob


def test_logit_bias_and_penalties(client, tiny_server):
    """The random model's logits lie within +-0.66, so biases of a few units decide: the assertions hold
    whatever the weights say, and each fails if the field is ignored."""
    tok = tiny_server.engine.tokenizer
    a, b = tok.decode([A]), tok.decode([B])

    def tokens(bias, prompt=(5, 6, 7), **kw):
        out = client.completions.create(model=MODEL, prompt=list(prompt), max_tokens=12, temperature=0, logprobs=0,
                                        logit_bias={str(t): v for t, v in bias.items()}, **kw)
        return out.choices[0].logprobs.tokens

    assert tokens({A: 8}) == [a] * 12
    assert tokens({A: 8}, presence_penalty=2.0) == [a] * 12  # 8 - 2 still wins
    freq = tokens({A: 8}, frequency_penalty=2.0)  # 8, 6, 4, 2 win; after five uses A is at -2
    assert freq[:4] == [a] * 4 and freq.count(a) in (4, 5)
    pres = tokens({A: 3.5, B: 3.5}, presence_penalty=2.0)  # the unused one of A, B leads by 2 at step 2
    assert {pres[0], pres[1]} == {a, b} and set(pres) == {a, b}
    freq = tokens({A: 3.5, B: 3.5}, frequency_penalty=2.0)
    assert sorted(freq[:4]) == sorted([a, a, b, b])
    # vLLM's repetition penalty also counts the prompt: with A in it, 3 + logit becomes at most 0.37,
    # below the best of 4,095 other logits (std 0.16)
    assert tokens({A: 3}, prompt=(5, A, 7))[0] == a
    assert tokens({A: 3}, prompt=(5, A, 7), extra_body={"repetition_penalty": 10.0})[0] != a


def test_batched_completion_prompts_with_n(client):
    prompts = ["def add(a, b):", "class Stack:"]
    out = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=5, temperature=0)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    singles = [client.completions.create(model=MODEL, prompt=p, max_tokens=5, temperature=0) for p in prompts]
    assert [c.text for c in out.choices] == [singles[0].choices[0].text] * 2 + [singles[1].choices[0].text] * 2
    assert out.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    streamed = list(client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=5, temperature=0,
                                              stream=True))
    for i in range(4):
        assert "".join(c.choices[0].text for c in streamed if c.choices and c.choices[0].index == i) == \
            out.choices[i].text
    ids = client.completions.create(model=MODEL, prompt=[[5, 6, 7], [8, 9]], max_tokens=3, temperature=0)
    assert len(ids.choices) == 2 and ids.usage.prompt_tokens == 5


def test_n_with_stop_string_aborts_only_that_choice(client, tiny_server):
    out = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0, n=2)
    text = out.choices[0].message.content
    stop = text[3:6]
    stopped = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0, n=2,
                                             stop=[stop])
    assert [c.message.content for c in stopped.choices] == [text[:text.index(stop)]] * 2
    assert all(c.finish_reason == "stop" for c in stopped.choices)
    r = httpx.get(tiny_server.url + "/health").json()
    assert r["status"] == "ok"
