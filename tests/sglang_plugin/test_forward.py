"""The plugin's forward against the PLT HF model, on CPU, with SGLang's layers stood in (conftest.py).

Every step's logits must equal the HF model's full forward over the same tokens: prefill in one batch of
two requests (one chunked), the chunk's continuation, then decode steps past the window, with 1, 2 and 4
simulated tensor-parallel ranks (4 ranks replicate the 2 KV heads).
"""
import pytest
import torch

from loopcoder.model_server.errors import ModelError
from loopcoder.model_server.plt import (IQuestLoopCoderConfig, IQuestLoopCoderForCausalLM, IQuestPLTCoderConfig,
                                        IQuestPLTCoderForCausalLM)

from .conftest import Scheduler

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, rope_theta=10000.0)
VARIANTS = {
    "plt-hidden-gate": (IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM,
                        dict(plt_window_size=[3, 0], plt_emb_scale=0.707, plt_hidden_scale=0.6,
                             plt_normalize_per_loop=True, plt_gate_use_hidden_states=True)),
    "plt-query-gate": (IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM,
                       dict(plt_window_size=[4, 0], plt_normalize_per_loop=False, plt_gate_use_hidden_states=False)),
    "plt-3-loops": (IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM,
                    dict(plt_num_loops=3, plt_window_size=[3, 0], plt_emb_scale=0.9, plt_hidden_scale=0.5,
                         plt_gate_use_hidden_states=True)),
    "iquest-v1": (IQuestLoopCoderConfig, IQuestLoopCoderForCausalLM, dict(loop_num=2, loop_window_size=4)),
}


def hf_model(name, seed=0):
    """The HF model with random weights whose gates and norms matter (as tests/model does)."""
    config_cls, model_cls, fields = VARIANTS[name]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**SMALL, **fields)).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim == 1 and p.shape[0] == SMALL["num_attention_heads"]:
                p.normal_()
            elif pname.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape))
    return model.to(torch.float64)


def entry_class(plugin, name):
    return {cls.__name__: cls for cls in plugin.EntryClass}[VARIANTS[name][1].__name__]


def reference_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0, -1]


def _scheduler(plugin, name, tp, model):
    return Scheduler(plugin, entry_class(plugin, name), model.config, model.state_dict(), tp=tp,
                     dtype=torch.float64)


@pytest.mark.parametrize("name,tp", [("plt-hidden-gate", 1), ("plt-hidden-gate", 2), ("plt-hidden-gate", 4),
                                     ("plt-query-gate", 2), ("plt-3-loops", 1), ("iquest-v1", 1),
                                     ("iquest-v1", 2)])
def test_extend_chunks_and_decode_equal_the_hf_model(plugin, name, tp):
    model = hf_model(name)
    sched = _scheduler(plugin, name, tp, model)
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, 97, (11,), generator=gen).tolist()
    b = torch.randint(0, 97, (6,), generator=gen).tolist()
    sched.add("a", a)
    sched.add("b", b)
    # one batch: the first 7 tokens of a (a chunk) and all of b; then the rest of a
    logits = sched.extend([("a", 7), ("b", 6)])
    torch.testing.assert_close(logits[0], reference_logits(model, a[:7]), rtol=0, atol=1e-9)
    torch.testing.assert_close(logits[1], reference_logits(model, b), rtol=0, atol=1e-9)
    logits = sched.extend([("a", 4)])
    torch.testing.assert_close(logits[0], reference_logits(model, a), rtol=0, atol=1e-9)
    for step in range(7):  # past the window: ring entries are overwritten
        nxt = torch.randint(0, 97, (2,), generator=gen).tolist()
        logits = sched.decode(["a", "b"], nxt)
        for i, rid in enumerate(["a", "b"]):
            want = reference_logits(model, sched.reqs[rid]["tokens"])
            torch.testing.assert_close(logits[i], want, rtol=0, atol=1e-9, msg=f"{rid} at decode step {step}")


def test_a_reused_slot_starts_from_a_zero_carry(plugin):
    model = hf_model("plt-hidden-gate")
    sched = _scheduler(plugin, "plt-hidden-gate", 1, model)
    first = list(range(3, 15))
    sched.add("first", first)
    sched.extend([("first", 12)])
    sched.decode(["first"], [5])
    slot = sched.reqs["first"]["slot"]
    # short enough that the carry at its first token reaches its last token's logits (window x layers)
    second = [40, 41, 42]
    sched.add("second", second, slot=slot)  # SGLang hands the finished request's slot to a new one
    logits = sched.extend([("second", 3)])
    torch.testing.assert_close(logits[0], reference_logits(model, second), rtol=0, atol=1e-9)
    logits = sched.decode(["second"], [7])
    torch.testing.assert_close(logits[0], reference_logits(model, second + [7]), rtol=0, atol=1e-9)


def test_a_radix_cache_hit_is_refused_not_silently_wrong(plugin):
    model = hf_model("plt-hidden-gate")
    sched = _scheduler(plugin, "plt-hidden-gate", 1, model)
    tokens = list(range(3, 15))
    sched.add("donor", tokens)
    sched.extend([("donor", 12)])
    # a new request whose first 8 tokens SGLang's radix cache would serve from the donor's KV
    sched.add("hit", tokens + [1, 2], prefix_len=8)
    with pytest.raises(ModelError, match="--disable-radix-cache"):
        sched.extend([("hit", 6)])


def test_decode_runs_every_loop_as_rows_of_one_pass(plugin, monkeypatch):
    """A PLT decode step calls each layer's qkv once with R*B rows and launches one gswa_decode per layer."""
    model = hf_model("plt-3-loops")
    sched = _scheduler(plugin, "plt-3-loops", 1, model)
    sched.add("a", list(range(3, 12)))
    sched.add("b", list(range(20, 26)))
    sched.extend([("a", 9), ("b", 6)])
    rows, launches = [], []
    attn0 = sched.models[0].model.layers[0].self_attn
    real_qkv, real_decode = attn0.qkv, plugin.gswa_decode
    monkeypatch.setattr(attn0, "qkv", lambda x, c, s: rows.append(x.shape[0]) or real_qkv(x, c, s))
    monkeypatch.setattr(plugin, "gswa_decode", lambda q, *a, **k: launches.append(tuple(q.shape)) or real_decode(q, *a, **k))
    sched.decode(["a", "b"], [1, 2])
    assert rows == [3 * 2]
    assert launches == [(2, 3, 4, 8)] * 2  # [B, R, H, D], one launch per layer


def test_the_rings_live_in_request_slots_with_a_padding_row(plugin):
    model = hf_model("plt-3-loops")
    sched = _scheduler(plugin, "plt-3-loops", 2, model)
    sched.add("a", list(range(3, 12)))
    sched.extend([("a", 9)])
    state = sched.models[0].model.state
    # [layers, slots + 1 (row 0: SGLang's padding row), R-1, window, KV heads per rank, head_dim]
    assert tuple(state.ring_k.shape) == (2, sched.req_pool.size + 1, 2, 4, 1, 8)
    assert tuple(state.carry.shape) == (2, sched.req_pool.size + 1, 32)
    assert state.carry[:, 0].abs().sum() == 0 and state.carry[:, sched.reqs["a"]["slot"]].abs().sum() > 0


def test_a_checkpoints_own_config_class_without_rope_parameters_serves_the_same(plugin):
    """SGLang hands the model the checkpoint's remote-code config (written for transformers 4.x): no
    rope_parameters, no head_dim, no attention_bias; the plugin derives them and computes the same logits."""
    from types import SimpleNamespace

    model = hf_model("plt-hidden-gate")
    fields = {k: v for k, v in model.config.to_dict().items() if k not in ("rope_parameters", "head_dim", "attention_bias")}
    remote = SimpleNamespace(**fields, rope_theta=model.config.rope_parameters["rope_theta"], rope_scaling=None)
    sched = Scheduler(plugin, entry_class(plugin, "plt-hidden-gate"), remote, model.state_dict(), dtype=torch.float64)
    tokens = list(range(5, 17))
    sched.add("a", tokens)
    logits = sched.extend([("a", 12)])
    torch.testing.assert_close(logits[0], reference_logits(model, tokens), rtol=0, atol=1e-9)
    logits = sched.decode(["a"], [3])
    torch.testing.assert_close(logits[0], reference_logits(model, tokens + [3]), rtol=0, atol=1e-9)
