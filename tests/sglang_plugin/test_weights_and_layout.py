"""Weight names and tensor-parallel shards, KV layer ids, SGLang's window convention, EntryClass registration."""
import importlib
import pkgutil

import pytest
import torch

from loopcoder.model_server.errors import CheckpointError
from loopcoder.model_server.kernels import gswa_prefill
from loopcoder.model_server.plt.plt_math import keys_in_sglang_window, sglang_sliding_window
from loopcoder.model_server.sglang_plugin import weights

from .conftest import Scheduler
from .test_forward import entry_class, hf_model


def test_plt_names_map_to_stacked_params_and_exact_gate_names():
    t = lambda n: weights.target(n, is_plt=True, num_layers=14)  # noqa: E731
    assert t("model.layers.3.self_attn.q_proj.weight") == weights.Target("model.layers.3.self_attn.qkv_proj.weight", "q")
    assert t("model.layers.3.self_attn.k_proj.weight").shard == "k"
    assert t("model.layers.3.self_attn.v_proj.bias") == weights.Target("model.layers.3.self_attn.qkv_proj.bias", "v")
    assert t("model.layers.0.mlp.gate_proj.weight") == weights.Target("model.layers.0.mlp.gate_up_proj.weight", 0)
    assert t("model.layers.0.mlp.up_proj.weight") == weights.Target("model.layers.0.mlp.gate_up_proj.weight", 1)
    assert t("model.layers.13.mlp.down_proj.weight") == weights.Target("model.layers.13.mlp.down_proj.weight")
    assert t("model.layers.2.self_attn.plt_gate.weight") == weights.Target("model.layers.2.self_attn.plt_gate.weight")
    assert t("model.layers.2.self_attn.plt_gate.bias").param == "model.layers.2.self_attn.plt_gate.bias"
    assert t("model.layers.2.self_attn.plt_gate.gate_norm.weight").param == \
        "model.layers.2.self_attn.plt_gate.gate_norm.weight"
    # the vendor fork's alias
    assert t("model.layers.2.self_attn.loop_gate_proj.weight").param == "model.layers.2.self_attn.plt_gate.weight"
    assert t("model.layers.2.self_attn.rotary_emb.inv_freq") is None
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert t(name) == weights.Target(name)


def test_v1_gate_projections_are_not_taken_for_the_mlp_gate_proj():
    """SGLang 0.5.23's own file matches "gate_proj" as a substring and drops these (plt_spec.md 7)."""
    t = lambda n: weights.target(n, is_plt=False, num_layers=80)  # noqa: E731
    assert t("model.gate_projections.7.weight") == weights.Target("model.gate_projections.7.weight")
    assert t("model.gate_projections.7.bias") == weights.Target("model.gate_projections.7.bias")
    assert t("model.layers.7.mlp.gate_proj.weight").param == "model.layers.7.mlp.gate_up_proj.weight"


@pytest.mark.parametrize("name,is_plt,match", [
    ("model.layers.0.self_attn.plt_gate.weight", False, "unexpected weight"),  # a PLT gate in a v1 checkpoint
    ("model.gate_projections.0.weight", True, "unexpected weight"),
    ("model.layers.0.self_attn.qk_norm.weight", True, "unexpected weight"),
    ("model.layers.2.mlp.up_proj.weight", True, "names layer 2, the config has 2 layers"),
])
def test_unknown_names_are_errors_not_silently_skipped(name, is_plt, match):
    with pytest.raises(CheckpointError, match=match):
        weights.target(name, is_plt=is_plt, num_layers=2)


def test_head_and_kv_head_slices():
    assert [weights.head_slice(40, 8, r) for r in (0, 3, 7)] == [(0, 5), (15, 5), (35, 5)]
    assert [weights.kv_head_slice(8, 4, r) for r in range(4)] == [(0, 2), (2, 2), (4, 2), (6, 2)]
    # fewer KV heads than ranks: each KV head on tp/G consecutive ranks (QKVParallelLinear's rule)
    assert [weights.kv_head_slice(8, 16, r)[0] for r in range(16)] == [r // 2 for r in range(16)]
    with pytest.raises(CheckpointError, match="do not split"):
        weights.head_slice(40, 3, 0)
    with pytest.raises(CheckpointError, match="not a multiple"):
        weights.kv_head_slice(8, 12, 0)


@pytest.mark.parametrize("name,tp", [("plt-hidden-gate", 2), ("plt-hidden-gate", 4), ("plt-query-gate", 4),
                                     ("iquest-v1", 2)])
def test_each_rank_loads_its_heads_rows_of_the_gate_next_to_its_query_heads(plugin, name, tp):
    model = hf_model(name)
    full = model.state_dict()
    sched = Scheduler(plugin, entry_class(plugin, name), model.config, full, tp=tp, dtype=torch.float64)
    heads, d = 4 // tp, 8
    for rank, m in enumerate(sched.models):
        for layer in range(2):
            if name.startswith("plt"):
                gate, prefix = m.model.layers[layer].self_attn.plt_gate, f"model.layers.{layer}.self_attn.plt_gate"
            else:
                gate, prefix = m.model.gate_projections[layer], f"model.gate_projections.{layer}"
            rows = slice(rank * heads, (rank + 1) * heads)
            assert torch.equal(gate.weight, full[f"{prefix}.weight"][rows])
            assert torch.equal(gate.bias, full[f"{prefix}.bias"][rows])
            if name == "plt-hidden-gate":  # the gate's norm reads the full residual: replicated
                assert torch.equal(gate.gate_norm.weight, full[f"{prefix}.gate_norm.weight"])
            # the rank's q rows are the same heads the gate rows belong to
            qkv = m.model.layers[layer].self_attn.qkv_proj.weight
            q_full = full[f"model.layers.{layer}.self_attn.q_proj.weight"]
            assert torch.equal(qkv[: heads * d], q_full[rank * heads * d: (rank + 1) * heads * d])
            kv_first, kv_count = weights.kv_head_slice(2, tp, rank)
            k_full = full[f"model.layers.{layer}.self_attn.k_proj.weight"]
            assert torch.equal(qkv[heads * d: heads * d + kv_count * d], k_full[kv_first * d: (kv_first + kv_count) * d])


def test_every_checkpoint_tensor_is_used_and_a_missing_gate_is_an_error(plugin):
    model = hf_model("iquest-v1")
    full = model.state_dict()
    sched = Scheduler(plugin, entry_class(plugin, "iquest-v1"), model.config, full, tp=1, dtype=torch.float64)
    assert {"model.gate_projections.0.weight", "model.gate_projections.1.bias"} <= sched.loaded
    assert sched.loaded == set(dict(sched.models[0].named_parameters()))
    partial = {k: v for k, v in full.items() if k != "model.gate_projections.1.weight"}
    with pytest.raises(CheckpointError, match="no weights for: model.gate_projections.1.weight"):
        Scheduler(plugin, entry_class(plugin, "iquest-v1"), model.config, partial, tp=1, dtype=torch.float64)


@pytest.mark.parametrize("name", ["plt-hidden-gate", "iquest-v1"])
def test_kv_pool_layers_are_one_radix_attention_per_physical_layer(plugin, name):
    """What SGLang 0.5.23's layer_setup collects (``layer.self_attn.attn`` of every layer, by layer_id)."""
    model = hf_model(name)
    sched = Scheduler(plugin, entry_class(plugin, name), model.config, model.state_dict(), tp=2, dtype=torch.float64)
    layers = sched.models[0].model.layers
    attns = [layer.self_attn.attn for layer in layers]
    assert all(type(a).__name__ == "RadixAttention" for a in attns)
    assert [a.layer_id for a in attns] == weights.kv_layer_ids(2) == [0, 1]
    assert all(a.sliding_window_size == -1 for a in attns)  # loop 0 attends the whole context
    assert all((a.tp_q_head_num, a.tp_k_head_num) == (2, 1) for a in attns)  # per rank at tp=2
    assert not any(isinstance(m, torch.nn.ModuleList) for layer in layers for m in layer.self_attn.children())


def test_sglang_counts_the_window_exclusively():
    assert sglang_sliding_window(65) == 64  # LoopCoder-V2: plt_window_size [64, 0] -> 65 keys incl. self
    assert keys_in_sglang_window(64) == 65 and keys_in_sglang_window(-1) == -1
    assert sglang_sliding_window(2) == 1
    with pytest.raises(ValueError, match="0 means unlimited"):  # RadixAttention: sliding_window_size or -1
        sglang_sliding_window(1)


@pytest.mark.parametrize("window", [2, 3, 5])
def test_radix_attention_with_the_converted_window_equals_the_kernels_local_branch(plugin, window):
    """The stand-in RadixAttention (SGLang's documented window semantics) with sliding_window_size =
    sglang_sliding_window(W) sees exactly the keys of the G-SWA kernel's local branch of W keys."""
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode
    from sglang.srt.model_executor.forward_context import use_pools

    torch.manual_seed(window)
    n, h, g, d = 9, 4, 2, 8
    q, k, v = torch.randn(n, h, d, dtype=torch.float64), torch.randn(n, g, d, dtype=torch.float64), \
        torch.randn(n, g, d, dtype=torch.float64)
    req, kv = ReqToTokenPool(1, n), MHATokenToKVPool(n, torch.float64, g, d, 1)
    req.req_to_token[1, :n] = torch.arange(1, n + 1, dtype=torch.int32)
    attn = RadixAttention(h, d, d ** -0.5, g, layer_id=0, sliding_window_size=sglang_sliding_window(window))
    fb = ForwardBatch(ForwardMode.EXTEND, 1, torch.zeros(n, dtype=torch.long), torch.tensor([1]), torch.tensor([n]),
                      torch.arange(1, n + 1), torch.arange(n), torch.tensor([n]), torch.tensor([0]), [n], [0])
    with use_pools(req, kv):
        got = attn(q.reshape(n, -1), k.reshape(n, -1), v.reshape(n, -1), fb).view(n, h, d)
    cu = torch.tensor([0, n], dtype=torch.int32)
    want = gswa_prefill(q, k, v, cu, cu, n, n, k_loc=k, v_loc=v, cu_seqlens_kl=cu,
                        gate=torch.zeros(n, h, dtype=torch.float64), window=window)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # one key fewer is a different answer: the comparison sees an off-by-one
    fewer = gswa_prefill(q, k, v, cu, cu, n, n, k_loc=k, v_loc=v, cu_seqlens_kl=cu,
                         gate=torch.zeros(n, h, dtype=torch.float64), window=window - 1)
    assert (got - fewer).abs().max() > 1e-3


def test_sglang_registers_both_architectures_from_the_package(plugin):
    """SGLang 0.5.23's import_model_classes: every module of the package, EntryClass by class name."""
    import loopcoder.model_server.sglang_plugin as package

    archs = {}
    for _, name, ispkg in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        module = importlib.import_module(name)
        if not ispkg and hasattr(module, "EntryClass"):
            entries = module.EntryClass if isinstance(module.EntryClass, list) else [module.EntryClass]
            archs.update({cls.__name__: cls for cls in entries})
    assert set(archs) == {"IQuestPLTCoderForCausalLM", "IQuestLoopCoderForCausalLM"}
    assert package.PACKAGE == "loopcoder.model_server.sglang_plugin"


def test_a_config_of_the_other_family_is_refused(plugin):
    from loopcoder.model_server.errors import ModelError

    model = hf_model("iquest-v1")
    with pytest.raises(ModelError, match="serves model_type 'iquestpltcoder'"):
        entry_class(plugin, "plt-hidden-gate")(model.config)


# Checked by hand against the SGLang 0.5.23 wheel's source (PyPI sglang==0.5.23): each is a top-level
# definition of that module, and each ForwardBatch field is declared on its dataclass. The stand-in cannot
# show that the real names exist; this list pins what was checked, and the test fails when the plugin
# starts using anything else.
VERIFIED_IMPORTS = {
    ("sglang.srt.layers.linear", "MergedColumnParallelLinear"), ("sglang.srt.layers.linear", "QKVParallelLinear"),
    ("sglang.srt.layers.linear", "RowParallelLinear"), ("sglang.srt.layers.logits_processor", "LogitsProcessor"),
    ("sglang.srt.layers.radix_attention", "RadixAttention"),
    ("sglang.srt.layers.vocab_parallel_embedding", "ParallelLMHead"),
    ("sglang.srt.layers.vocab_parallel_embedding", "VocabParallelEmbedding"),
    ("sglang.srt.model_executor.forward_batch_info", "ForwardBatch"),
    ("sglang.srt.model_executor.forward_batch_info", "ForwardMode"),
    ("sglang.srt.model_executor.forward_context", "get_req_to_token_pool"),
    ("sglang.srt.model_executor.forward_context", "get_token_to_kv_pool"),
    ("sglang.srt.model_loader.weight_utils", "default_weight_loader"),
    ("sglang.srt.runtime_context", "get_parallel"),
}
VERIFIED_BATCH_FIELDS = {"forward_mode", "req_pool_indices", "seq_lens", "out_cache_loc", "extend_prefix_lens_cpu",
                         "extend_seq_lens_cpu", "rids"}


def test_the_plugin_uses_only_sglang_names_checked_in_the_pinned_version():
    import ast
    from pathlib import Path

    import loopcoder.model_server.sglang_plugin as package

    tree = ast.parse((Path(package.__file__).parent / "model.py").read_text())
    imports = {(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and (node.module or "").startswith("sglang") for alias in node.names}
    assert imports <= VERIFIED_IMPORTS, imports - VERIFIED_IMPORTS
    fields = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Name) and node.value.id == "forward_batch"}
    assert fields <= VERIFIED_BATCH_FIELDS, fields - VERIFIED_BATCH_FIELDS
