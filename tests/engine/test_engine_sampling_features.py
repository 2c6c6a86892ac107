"""The engine's sampling features: n > 1 forks that share the prompt's prefill, grammar masks, logprobs,
penalties and logit_bias, all checked against independent runs or direct computation on the model."""
import json
import warnings

import pytest
import torch

from loopcoder.model_server.engine import GrammarError, GrammarSpec, LLMEngine, EngineConfig, SamplingParams
from loopcoder.model_server.engine.grammar import apply_token_bitmask
from loopcoder.model_server.engine.sampler import _apply_penalties, sample
from loopcoder.model_server.engine.sequence import Sequence
from loopcoder.model_server.plt.checkpoint import init_checkpoint, load_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("plt-sampling"), "tiny", seed=5)


def make_engine(path, **overrides):
    fields = dict(model=str(path), max_num_seqs=4, max_model_len=128, max_num_batched_tokens=64, block_size=4)
    fields.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = load_checkpoint(path)
    return LLMEngine(model, tok, EngineConfig(**fields))


def prompt(n, seed=0):
    return torch.randint(13, 4096, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def run(engine, submissions):
    """submissions: (prompt, params, request_id, fork_ids); returns {request_id: (tokens, finish, events)}."""
    out = {}
    for p, params, rid, forks in submissions:
        engine.submit(p, params, rid, fork_ids=forks)
        for r in [rid, *forks]:
            out[r] = ([], None, [])
    peak_blocks = 0
    while engine.has_work():
        for ev in engine.step():
            tokens, _, events = out[ev.request_id]
            out[ev.request_id] = (tokens + ev.token_ids, ev.finish_reason, events + [ev])
        peak_blocks = max(peak_blocks, engine.blocks.used_blocks)
    engine.peak_blocks = peak_blocks
    return out


def test_forks_equal_independent_requests_with_the_next_seeds(checkpoint):
    # prefix caching off: with it, the independent requests would share the cached prompt blocks too
    engine = make_engine(checkpoint, enable_prefix_caching=False)
    p = prompt(30)  # 30 % block_size != 0: the partly filled last block is copied
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=7, ignore_eos=True)
    forked = run(engine, [(p, params, "a", ["a1", "a2"])])
    forked_peak, prefill_tokens = engine.peak_blocks, engine.counters["prompt_tokens"]
    assert prefill_tokens == len(p)  # the prompt was computed once for three answers
    alone = run(engine, [(p, params.model_copy(update={"seed": 7 + i}), f"s{i}", []) for i in range(3)])
    assert [forked[r][0] for r in ("a", "a1", "a2")] == [alone[f"s{i}"][0] for i in range(3)]
    assert len({tuple(forked[r][0]) for r in ("a", "a1", "a2")}) == 3  # different seeds, different answers
    assert forked_peak < engine.peak_blocks  # full prompt blocks were shared, not copied
    assert engine.blocks.used_blocks == 0 and len(engine.blocks.free_slots) == engine.cfg.max_num_seqs
    assert engine.blocks.refs == [0] * engine.blocks.num_blocks


def test_forks_without_room_wait_and_recompute_exactly(checkpoint):
    engine = make_engine(checkpoint, max_num_seqs=2)
    p = prompt(17, seed=1)
    greedy = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
    out = run(engine, [(p, greedy, "g", ["g1", "g2", "g3"])])
    single = run(engine, [(p, greedy, "x", [])])["x"][0]
    assert all(out[r][0] == single for r in ("g", "g1", "g2", "g3"))
    assert engine.counters["prompt_tokens"] > 2 * len(p)  # two forks had no slot: they recomputed
    assert engine.blocks.used_blocks == 0


def test_aborting_a_fork_before_it_starts_and_the_parent_while_queued(checkpoint):
    engine = make_engine(checkpoint)
    params = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)

    def drain():
        done = {}
        while engine.has_work():
            for e in engine.step():
                if e.finished:
                    done[e.request_id] = (e.finish_reason, e.completion_tokens)
        return done

    engine.submit(prompt(9), params, "p", fork_ids=["p1", "p2"])
    engine.abort("p1")
    events = engine.step()
    assert [(e.request_id, e.finish_reason) for e in events if e.finished] == [("p1", "abort")]
    assert drain() == {"p": ("length", 5), "p2": ("length", 5)}
    assert engine.blocks.used_blocks == 0
    # the parent aborted while queued: its fork runs on its own
    engine.submit(prompt(9), params, "q", fork_ids=["q1"])
    engine.abort("q")
    assert drain() == {"q": ("abort", 0), "q1": ("length", 5)}
    assert engine.blocks.used_blocks == 0


def test_logprobs_are_the_models_log_softmax(checkpoint):
    engine = make_engine(checkpoint)
    model = engine.model
    p = prompt(11, seed=2)
    out = run(engine, [(p, SamplingParams(max_tokens=4, temperature=0, logprobs=3, ignore_eos=True), "l", [])])
    tokens, _, events = out["l"]
    lps = [lp for e in events for lp in e.logprobs]
    assert [lp.token_id for lp in lps] == tokens
    with torch.no_grad():
        logits = model(torch.tensor([p + tokens]), use_cache=False).logits[0, len(p) - 1:-1].float()
    ref = logits.log_softmax(-1)
    for i, lp in enumerate(lps):
        assert lp.logprob == pytest.approx(ref[i, tokens[i]].item(), abs=1e-4)
        top_ids = ref[i].topk(3).indices.tolist()
        assert [t for t, _ in lp.top] == top_ids and lp.top[0][0] == tokens[i]  # greedy: the top token
        assert [v for _, v in lp.top] == pytest.approx(ref[i, top_ids].tolist(), abs=1e-4)
    none = run(engine, [(p, SamplingParams(max_tokens=2, temperature=0, ignore_eos=True), "n", [])])
    assert all(e.logprobs is None for e in none["n"][2])


def seq(params, output=(), prompt_ids=(5,)):
    s = Sequence("r", list(prompt_ids), params, frozenset(), 0.0)
    s.output_ids = list(output)
    return s


def test_sampler_bias_penalties_and_mask_batched():
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(4, 64)
    logits[:, 10] = 5.0  # token 10 wins unless something moves it
    rows = [
        seq(SamplingParams(temperature=0, logit_bias={20: 100.0})),                  # bias makes 20 win
        seq(SamplingParams(temperature=0, frequency_penalty=2.0), output=[10, 10, 10]),  # 5 - 6 < 0
        seq(SamplingParams(temperature=0, presence_penalty=2.0), output=[10]),         # 5 - 2 still wins
        seq(SamplingParams(temperature=0, repetition_penalty=10.0), prompt_ids=[10]),  # 5 / 10 < 1
    ]
    logits[3, 11] = 1.0
    bitmask = torch.full((4, 2), -1, dtype=torch.int32)
    tokens = sample(logits, rows, g, bitmask).tokens
    assert tokens[0] == 20 and tokens[1] != 10 and tokens[2] == 10 and tokens[3] == 11
    # a mask that allows only token 33 in row 2 (bit 1 of word 1) overrides everything in that row
    bitmask[2] = torch.tensor([0, 1 << 1], dtype=torch.int32)
    assert sample(logits, rows, g, bitmask).tokens[2] == 33
    masked = apply_token_bitmask(logits, bitmask)
    assert torch.isinf(masked[2]).sum() == 63 and not torch.isinf(masked[0]).any()
    assert logits[0, 20] == 0  # the caller's logits are not modified


def test_penalties_equal_the_formula_per_row():
    """The penalised logits themselves, not only the argmax: OpenAI's logit - frequency * count - presence *
    [count > 0] over the generated tokens, and vLLM's repetition penalty over prompt and generated tokens
    (divide a positive logit, multiply a negative one); rows without penalties are untouched."""
    logits = torch.linspace(-3, 3, 2 * 16).reshape(2, 16)
    logits = torch.cat([logits, logits.flip(1)])  # [4, 16], positive and negative logits on seen tokens
    output = [3, 3, 3, 7, 12, 12]
    params = [SamplingParams(temperature=0, frequency_penalty=0.5, presence_penalty=1.25),
              SamplingParams(temperature=0, repetition_penalty=2.0),
              SamplingParams(temperature=0),
              SamplingParams(temperature=0, frequency_penalty=-0.5, presence_penalty=-1.0, repetition_penalty=0.5)]
    rows = [seq(p, output=output, prompt_ids=[1, 14]) for p in params]
    got = _apply_penalties(logits, rows)
    counts = torch.zeros(16)
    for t in output:
        counts[t] += 1
    seen = (counts > 0).clone()
    seen[[1, 14]] = True
    want = logits.clone()
    for r, p in enumerate(params):
        row = want[r]
        if p.repetition_penalty != 1.0:
            row = torch.where(seen, torch.where(row > 0, row / p.repetition_penalty, row * p.repetition_penalty), row)
        want[r] = row - p.frequency_penalty * counts - p.presence_penalty * (counts > 0).float()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert torch.equal(got[2], logits[2])


def test_greedy_rows_take_the_argmax_even_at_a_near_tie():
    """Temperature 0 is the argmax, with or without a seed and beside rows that sample: a near tie (1e-6
    apart) must not turn into a draw (a draw at the 1e-5 temperature floor picks either about half the time)."""
    logits = torch.zeros(3, 8)
    logits[:, 2], logits[:, 5] = 1.0, 1.0 + 1e-6
    for trial in range(40):
        rows = [seq(SamplingParams(temperature=0)), seq(SamplingParams(temperature=0)),
                seq(SamplingParams(temperature=1.0))]
        rows[1].generator = torch.Generator().manual_seed(trial)  # a seeded greedy request
        tokens = sample(logits, rows, torch.Generator().manual_seed(1000 + trial)).tokens
        assert tokens[:2] == [5, 5]


def test_grammar_constrains_sampled_json_at_temperature_one(checkpoint):
    engine = make_engine(checkpoint, max_model_len=512, max_num_seqs=8)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}},
              "required": ["ok", "n"], "additionalProperties": False}
    params = SamplingParams(max_tokens=200, temperature=1.0, seed=3,
                            grammar=GrammarSpec(kind="json_schema", value=json.dumps(schema)))
    out = run(engine, [(prompt(6, seed=9), params, "j", [f"j{i}" for i in range(7)])])
    tok = engine.tokenizer
    for tokens, finish, _ in out.values():
        assert finish == "stop" and tokens[-1] in engine.eos_ids
        obj = json.loads(tok.decode(tokens[:-1]))
        assert set(obj) == {"ok", "n"} and isinstance(obj["ok"], bool) and isinstance(obj["n"], int)
    free = run(engine, [(prompt(6, seed=9), params.model_copy(update={"grammar": None, "max_tokens": 20}), "f", [])])
    with pytest.raises(json.JSONDecodeError):  # the same random model without the mask writes no JSON
        json.loads(tok.decode(free["f"][0]))


def test_a_request_without_grammar_is_unmasked_beside_one_with_a_grammar(checkpoint):
    """Rows without a grammar get an all-allowed bitmask row when another row of the batch has one: a seeded
    free request gives the same tokens alone and batched with a grammar-constrained request."""
    engine = make_engine(checkpoint, max_model_len=512)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    free = SamplingParams(max_tokens=12, temperature=1.0, seed=4, ignore_eos=True)
    constrained = SamplingParams(max_tokens=12, temperature=1.0, seed=5,
                                 grammar=GrammarSpec(kind="json_schema", value=json.dumps(schema)))
    alone = run(engine, [(prompt(6, seed=1), free, "f", [])])["f"][0]
    both = run(engine, [(prompt(6, seed=2), constrained, "g", []), (prompt(6, seed=1), free, "f", [])])
    assert len(alone) == 12 and both["f"][0] == alone


def test_ebnf_grammars_compile_and_bad_ones_say_which_kind(checkpoint):
    engine = make_engine(checkpoint)
    matcher = engine.grammars.matcher(GrammarSpec(kind="ebnf", value='root ::= "ab" | "cd"'))
    ids = engine.tokenizer.encode("cd", add_special_tokens=False)
    assert ids and all(matcher.accept_token(t) for t in ids)
    with pytest.raises(GrammarError) as err:
        engine.grammars.compile(GrammarSpec(kind="regex", value="(unclosed"))
    assert str(err.value).startswith("invalid regex: ")


def test_length_bounded_strings_stay_json(checkpoint):
    """xgrammar 0.2.9 lets raw control characters into maxLength strings; the engine rewrites the bound
    as a pattern, which keeps the bound and excludes them."""
    engine = make_engine(checkpoint)
    schema = {"type": "object", "properties": {"c": {"type": "string", "minLength": 1, "maxLength": 3}},
              "required": ["c"]}

    def accepts(text):
        matcher = engine.grammars.matcher(GrammarSpec(kind="json_schema", value=json.dumps(schema)))
        return matcher.accept_string(text) and matcher.is_completed()

    assert accepts('{"c": "abc"}') and accepts('{"c": "\u00e9t\u00e9"}')  # three characters, five bytes
    assert not accepts('{"c": "abcd"}') and not accepts('{"c": ""}')
    assert not accepts('{"c": "a' + chr(0x13) + '"}')  # a raw control character is not JSON


def test_bad_grammar_and_bias_raise_at_submit(checkpoint):
    engine = make_engine(checkpoint)
    with pytest.raises(GrammarError, match="json schema"):
        engine.submit([5, 6], SamplingParams(grammar=GrammarSpec(kind="json_schema", value="{not json")))
    with pytest.raises(GrammarError, match="regex"):
        engine.submit([5, 6], SamplingParams(grammar=GrammarSpec(kind="regex", value="(unclosed")))
    with pytest.raises(ValueError, match="logit_bias token id 99999"):
        engine.submit([5, 6], SamplingParams(logit_bias={99999: 1.0}))
    assert not engine.has_work()
