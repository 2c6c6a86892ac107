"""The engine's logits, not only its greedy tokens, equal the model's full forward, on checkpoints whose
gates, norms and carry matter (engine_support.mixing_checkpoint): a swapped gate, a lost carry or a wrong
ring entry moves the logits by far more than the 1e-4 allowed, even where it would not change a token."""
import pytest
import torch

from engine_support import LogitRecordingEngine, make_engine, prompts, reference_logits
from loopcoder.model_server.engine import SamplingParams

GREEDY = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
TOL = 1e-4  # relative to the largest |logit|; float32 engine vs model measures about 1e-6


def check_logits(engine, model, batch, outs, num_loops=None):
    """Every sampled row against the model's full forward over the request's final tokens; returns the
    number of rows checked."""
    checked = 0
    for i, (prompt, out) in enumerate(zip(batch, outs)):
        tokens = prompt + out
        ref = reference_logits(model, tokens, num_loops)
        rows = {pos: row for (rid, pos), row in engine.logits.items() if rid == f"offline-{i}"}
        assert sorted(rows) == list(range(len(prompt) - 1, len(tokens) - 1)), "one row per generated token"
        for pos, row in rows.items():
            err = ((row - ref[pos]).abs().max() / ref[pos].abs().max()).item()
            assert err < TOL, f"request {i} position {pos}: relative logit error {err:.2e}"
            checked += 1
    return checked


def test_mixing_checkpoint_gates_really_mix(plt_mixing):
    engine, model = make_engine(plt_mixing)
    gates = torch.cat([layer.self_attn.plt_gate.bias for layer in model.model.layers])
    assert torch.sigmoid(gates).min() < 0.2 and torch.sigmoid(gates).max() > 0.8
    assert engine.spec.hidden_scale == 1.0


@pytest.mark.parametrize("decode_mode", ["fused", "sequential"])
@pytest.mark.parametrize("overrides", [
    dict(max_num_batched_tokens=16),            # prompts chunked: the carry crosses chunk boundaries
    dict(num_kv_blocks=14, max_num_seqs=3),     # preemption: recomputed from token 0 with a zero carry
], ids=["chunked", "preempted"])
def test_plt_logits_equal_full_forward(plt_mixing, decode_mode, overrides):
    engine, model = make_engine(plt_mixing, engine_cls=LogitRecordingEngine, decode_mode=decode_mode, **overrides)
    batch = prompts([5, 40, 13, 1, 27], seed=31)
    params = GREEDY.model_copy(update={"max_tokens": 10}) if "num_kv_blocks" in overrides else GREEDY
    outs = engine.generate(batch, params, arrivals=[0, 0, 3, 4, 9] if "num_kv_blocks" not in overrides else None)
    if "num_kv_blocks" in overrides:
        assert engine.scheduler.num_preemptions > 0
    assert check_logits(engine, model, batch, outs) == sum(len(o) for o in outs)


@pytest.mark.parametrize("decode_mode", ["fused", "sequential"])
def test_chunk_ending_one_token_before_the_prompt_end(plt_mixing, decode_mode):
    """Prompts of 17 and 33 tokens with 16-token chunks, one at a time: the last chunk is one token, whose
    loops >= 1 take the carry the previous chunk left, and whose logits are sampled."""
    engine, model = make_engine(plt_mixing, engine_cls=LogitRecordingEngine, max_num_batched_tokens=16,
                                max_num_seqs=1, decode_mode=decode_mode)
    batch = prompts([17, 33], seed=34)
    outs = engine.generate(batch, GREEDY.model_copy(update={"max_tokens": 2}))
    assert check_logits(engine, model, batch, outs) == 4


@pytest.mark.parametrize("decode_mode", ["fused", "sequential"])
def test_plt_three_loops_logits_equal_full_forward(plt_mixing, decode_mode):
    """Three loops: two rings and two carries, so a ring or carry index off by one picks the wrong one."""
    engine, model = make_engine(plt_mixing, num_loops=3, engine_cls=LogitRecordingEngine, max_num_batched_tokens=16,
                                decode_mode=decode_mode)
    batch = prompts([23, 6], seed=32)
    outs = engine.generate(batch, GREEDY, arrivals=[0, 2])
    assert check_logits(engine, model, batch, outs, num_loops=3) == 12


def test_iquest_v1_logits_equal_full_forward(v1_mixing):
    engine, model = make_engine(v1_mixing, engine_cls=LogitRecordingEngine, max_num_batched_tokens=16)
    batch = prompts([21, 6, 11], seed=33)
    outs = engine.generate(batch, GREEDY, arrivals=[0, 1, 1])
    assert check_logits(engine, model, batch, outs) == 18
