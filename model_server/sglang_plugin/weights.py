"""Checkpoint weight names -> the SGLang model's parameters, and the tensor-parallel slices of the gates.

Pure Python (no SGLang import), so the mapping is tested on its own. The names are the released ones
(plt_spec.md section 8); the SGLang side stacks q/k/v into ``qkv_proj`` and gate/up into
``gate_up_proj`` as every SGLang Llama-family model does. The gates are matched by their exact names:
SGLang 0.5.23's own iquest_loopcoder.py matches ``gate_proj`` as a substring, so the v1 gate
``model.gate_projections.N.weight`` falls into the MLP's stacked mapping and is silently dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CheckpointError

# (checkpoint module suffix, SGLang parameter module suffix, shard id)
_STACKED = {
    "self_attn.q_proj": ("self_attn.qkv_proj", "q"),
    "self_attn.k_proj": ("self_attn.qkv_proj", "k"),
    "self_attn.v_proj": ("self_attn.qkv_proj", "v"),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}
_PLAIN_LAYER = ("self_attn.o_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")
# The vendor fork's loader accepts loop_gate_proj for plt_gate (plt_spec.md 8.1).
_PLT_GATE = re.compile(r"^model\.layers\.(\d+)\.self_attn\.(?:plt_gate|loop_gate_proj)\.(weight|bias|gate_norm\.weight)$")
_V1_GATE = re.compile(r"^model\.gate_projections\.(\d+)\.(weight|bias)$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


@dataclass(frozen=True)
class Target:
    """Where one checkpoint tensor goes: the parameter name, and the shard id its weight_loader takes
    (None: the parameter's loader takes the whole tensor and slices it for its rank itself)."""

    param: str
    shard: str | int | None = None


def target(name: str, is_plt: bool, num_layers: int) -> Target | None:
    """The SGLang parameter of checkpoint tensor ``name``; None for tensors that are not weights
    (``rotary_emb.inv_freq``). Raises CheckpointError for a name the model does not have."""
    if name.endswith("rotary_emb.inv_freq"):
        return None
    if name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        return Target(name)
    gate = (_PLT_GATE if is_plt else _V1_GATE).match(name)
    if gate:
        layer, part = int(gate.group(1)), gate.group(2)
        _check_layer(name, layer, num_layers)
        if is_plt:
            return Target(f"model.layers.{layer}.self_attn.plt_gate.{part}")
        return Target(f"model.gate_projections.{layer}.{part}")
    m = _LAYER.match(name)
    if m:
        layer, module, kind = int(m.group(1)), m.group(2), m.group(3)
        _check_layer(name, layer, num_layers)
        if module in _STACKED:
            param_module, shard = _STACKED[module]
            return Target(f"model.layers.{layer}.{param_module}.{kind}", shard)
        if module in _PLAIN_LAYER:
            return Target(name)
    family = "LoopCoder-V2 (PLT)" if is_plt else "IQuest LoopCoder v1"
    raise CheckpointError(f"unexpected weight {name!r} for a {family} checkpoint")


def _check_layer(name: str, layer: int, num_layers: int) -> None:
    if layer >= num_layers:
        raise CheckpointError(f"weight {name!r} names layer {layer}, the config has {num_layers} layers")


def head_slice(total_heads: int, tp_size: int, tp_rank: int) -> tuple[int, int]:
    """(first, count) of the query heads tensor-parallel rank ``tp_rank`` owns: contiguous blocks, the
    split QKVParallelLinear and RowParallelLinear use, so a gate row always sits with its head."""
    if total_heads % tp_size:
        raise CheckpointError(f"{total_heads} attention heads do not split over tensor parallel size {tp_size}")
    count = total_heads // tp_size
    return tp_rank * count, count


def kv_head_slice(total_kv_heads: int, tp_size: int, tp_rank: int) -> tuple[int, int]:
    """(first, count) of the KV heads rank ``tp_rank`` holds. With fewer KV heads than ranks each KV head
    is replicated on tp_size / G consecutive ranks (QKVParallelLinear's rule)."""
    if total_kv_heads >= tp_size:
        if total_kv_heads % tp_size:
            raise CheckpointError(f"{total_kv_heads} KV heads do not split over tensor parallel size {tp_size}")
        count = total_kv_heads // tp_size
        return tp_rank * count, count
    if tp_size % total_kv_heads:
        raise CheckpointError(f"tensor parallel size {tp_size} is not a multiple of the {total_kv_heads} KV heads")
    return tp_rank // (tp_size // total_kv_heads), 1


def kv_layer_ids(num_layers: int) -> list[int]:
    """KV-pool layer ids the plugin registers: one RadixAttention per physical layer, for loop 0 only.

    Loops >= 1 keep their K/V in per-request rings owned by the plugin (W entries each), not in the
    pool, so the pool holds exactly ``num_hidden_layers`` layers of loop-0 K/V (plt_spec.md 5.1)."""
    return list(range(num_layers))
