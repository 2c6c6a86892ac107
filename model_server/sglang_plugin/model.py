"""LoopCoder-V2 (PLT) and IQuest LoopCoder v1 as SGLang models (written against SGLang 0.5.23).

Layout per tensor-parallel rank (its H/tp query heads, its KV heads):

| state | where | indexed by |
|---|---|---|
| loop-0 K/V | SGLang's KV pool, layer id = physical layer (``RadixAttention`` per layer) | ``req_to_token`` |
| rings of loops >= 1 | ``[L, slots + 1, R-1, window, G, D]`` owned here | ``req_pool_indices`` (row 0: padding) |
| CLP carry | ``[R-1, slots + 1, d]`` owned here | the same slot |

Extend (prefill, chunked prefill): loops one after another over the new tokens. Loop 0 goes through
``RadixAttention`` (it writes the pool and attends causally over prefix + chunk); loops >= 1 run the
project's packed-varlen G-SWA kernel with the global keys gathered from the pool through
``req_to_token`` and the local keys from the ring (``plt_math.local_plan``). Decode of a PLT model: all
R loops as R rows of ONE pass (row 0 writes loop-0 K/V into the pool with ``set_kv_buffer``, then one
``gswa_decode`` launch serves every row, reading the pool as pages of one token through
``req_to_token``). v1 decodes its loops in sequence (loop r needs loop r-1 at the same position).
Decode uses only tensor ops on device-resident indices: no host sync, no allocation after the first
(warm-up) forward, so SGLang's decode CUDA graphs capture it.

Prefix reuse follows the native engine's exactness rule: a request may continue from a prefix only in
the slot that computed it (chunked prefill). A radix-cache hit would start from a carry and rings this
slot never held, so it is refused with an error; serve with ``--disable-radix-cache``.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from sglang.srt.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode
from sglang.srt.model_executor.forward_context import get_req_to_token_pool, get_token_to_kv_pool
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.runtime_context import get_parallel

from ..errors import CheckpointError, ModelError
from ..kernels import gswa_decode, gswa_prefill
from ..plt.configuration import LoopSpec
from ..plt.modeling import PLTRMSNorm, PLTRotaryEmbedding, apply_rope
from ..plt.plt_math import (
    clp_input, gate_from_hidden, gate_from_query, gate_mix, local_plan, ring_attention, ring_entry_valid,
    shift_packed,
)
from .weights import head_slice, target


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [N, heads, D] at the positions of cos/sin [1, N, D]."""
    return apply_rope(x.transpose(0, 1)[None], cos, sin)[0].transpose(0, 1)


def _head_rows_loader(first: int, count: int):
    """weight_loader keeping rows first..first+count-1 of a per-head tensor ([H, ...] or [H])."""
    def load(param: nn.Parameter, loaded: torch.Tensor) -> None:
        if loaded.shape[1:] != param.shape[1:] or loaded.shape[0] < first + count:
            raise CheckpointError(f"gate tensor of shape {list(loaded.shape)} does not fit "
                                  f"{count} heads of shape {list(param.shape)} from head {first}")
        param.data.copy_(loaded.narrow(0, first, count))
    return load


class ShardedLoopGate(nn.Module):
    """The G-SWA gate of this rank's query heads (plt_spec.md 3.2).

    Hidden mode (``plt_gate`` with plt_gate_use_hidden_states): W [H, d], b [H], gate_norm [d]; the
    gate reads the full residual, which every rank holds. Query mode (``plt_gate`` with the flag off,
    v1 ``gate_projections``): W [H, head_dim], b [H]. W and b are split by query head like q_proj.
    """

    def __init__(self, total_heads: int, in_features: int, from_hidden: bool, eps: float,
                 tp_size: int, tp_rank: int):
        super().__init__()
        first, count = head_slice(total_heads, tp_size, tp_rank)
        self.from_hidden = from_hidden
        self.weight = nn.Parameter(torch.empty(count, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(count), requires_grad=False)
        self.weight.weight_loader = _head_rows_loader(first, count)
        self.bias.weight_loader = _head_rows_loader(first, count)
        if from_hidden:
            self.gate_norm = PLTRMSNorm(in_features, eps)
            self.gate_norm.weight.requires_grad_(False)

    def forward(self, residual: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """residual [N, d], query [N, H_rank, D] (post-RoPE) -> gate [N, H_rank]."""
        if self.from_hidden:
            return gate_from_hidden(residual, self.gate_norm.weight, self.gate_norm.eps, self.weight, self.bias)
        return gate_from_query(query, self.weight, self.bias)


class PLTAttention(nn.Module):
    def __init__(self, config, layer_id: int, spec: LoopSpec, is_plt: bool, tp_size: int, tp_rank: int,
                 quant_config=None, prefix: str = ""):
        super().__init__()
        self.total_heads = config.num_attention_heads
        self.num_heads = head_slice(self.total_heads, tp_size, tp_rank)[1]
        self.num_kv_heads = max(1, config.num_key_value_heads // tp_size)
        self.head_dim = config.head_dim
        self.scale = self.head_dim ** -0.5
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_dim, self.total_heads,
                                          config.num_key_value_heads, bias=config.attention_bias,
                                          quant_config=quant_config, prefix=f"{prefix}.qkv_proj")
        self.o_proj = RowParallelLinear(self.total_heads * self.head_dim, config.hidden_size,
                                        bias=config.attention_bias, quant_config=quant_config,
                                        prefix=f"{prefix}.o_proj")
        # Loop 0 only: the pool's layer ``layer_id`` holds its K/V, which every later loop reads as its
        # global branch. No window: loop 0 attends causally over the whole context.
        self.attn = RadixAttention(self.num_heads, self.head_dim, self.scale, num_kv_heads=self.num_kv_heads,
                                   layer_id=layer_id, sliding_window_size=-1, quant_config=quant_config,
                                   prefix=f"{prefix}.attn")
        if is_plt:
            in_features = config.hidden_size if spec.gate_from_hidden else self.head_dim
            self.plt_gate = ShardedLoopGate(self.total_heads, in_features, spec.gate_from_hidden,
                                            config.rms_norm_eps, tp_size, tp_rank)

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [N, d] -> q [N, H_rank, D], k and v [N, G_rank, D], RoPE applied."""
        qkv, _ = self.qkv_proj(x)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        n = x.shape[0]
        q = _rope(q.reshape(n, self.num_heads, self.head_dim), cos, sin)
        k = _rope(k.reshape(n, self.num_kv_heads, self.head_dim), cos, sin)
        return q, k, v.reshape(n, self.num_kv_heads, self.head_dim)

    def out(self, o: torch.Tensor) -> torch.Tensor:
        return self.o_proj(o.reshape(o.shape[0], self.q_size))[0]


class PLTMLP(nn.Module):
    def __init__(self, config, quant_config=None, prefix: str = ""):
        super().__init__()
        if config.hidden_act != "silu":
            raise ModelError(f"unsupported hidden_act {config.hidden_act!r}; LoopCoder uses 'silu'")
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [config.intermediate_size] * 2,
                                                       bias=False, quant_config=quant_config,
                                                       prefix=f"{prefix}.gate_up_proj")
        self.down_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, bias=False,
                                           quant_config=quant_config, prefix=f"{prefix}.down_proj")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, _ = self.gate_up_proj(x)
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down_proj(nn.functional.silu(gate) * up)[0]


class PLTDecoderLayer(nn.Module):
    def __init__(self, config, layer_id: int, spec: LoopSpec, is_plt: bool, tp_size: int, tp_rank: int,
                 quant_config=None, prefix: str = ""):
        super().__init__()
        self.self_attn = PLTAttention(config, layer_id, spec, is_plt, tp_size, tp_rank, quant_config,
                                      f"{prefix}.self_attn")
        self.mlp = PLTMLP(config, quant_config, f"{prefix}.mlp")
        self.input_layernorm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)

    def finish(self, residual: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """o_proj, residual add, MLP block: the rest of the layer after attention."""
        h = residual + self.self_attn.out(attn_out)
        return h + self.mlp(self.post_attention_layernorm(h))


class SlotState:
    """Per-request state of loops >= 1, in SGLang's request slots (``req_pool_indices``; row 0 is
    SGLang's padding row, written by padded CUDA-graph rows and never read for a real request)."""

    def __init__(self, num_layers, loops, window, slots, kv_heads, head_dim, hidden, dtype, device):
        rings = loops - 1
        shape = (num_layers, slots, rings, window, kv_heads, head_dim)
        self.ring_k = torch.zeros(shape, dtype=dtype, device=device)
        self.ring_v = torch.zeros(shape, dtype=dtype, device=device)
        self.carry = torch.zeros(max(rings, 1), slots, hidden, dtype=dtype, device=device)
        self.length = torch.zeros(slots, dtype=torch.long, device=device)  # tokens the slot has computed
        self.owner: list[str | None] = [None] * slots  # request id that computed the slot's state


class IQuestLoopSGLangModel(nn.Module):
    def __init__(self, config, quant_config=None, prefix: str = "model"):
        super().__init__()
        self.config = config
        self.spec = spec = LoopSpec.from_config(config, warn=False)
        self.is_plt = spec.clp
        if spec.num_loops != spec.trained_loops:
            raise ModelError(f"the SGLang plugin runs the trained {spec.trained_loops} loops, config asks "
                             f"for {spec.num_loops}")
        # The linear layers' default group (SGLang 0.5.23 deprecates the get_tensor_model_parallel_* getters)
        self.tp_size, self.tp_rank = get_parallel().tp_size, get_parallel().tp_rank
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size,
                                                   quant_config=quant_config, prefix=f"{prefix}.embed_tokens")
        self.layers = nn.ModuleList(
            PLTDecoderLayer(config, i, spec, self.is_plt, self.tp_size, self.tp_rank, quant_config,
                            f"{prefix}.layers.{i}")
            for i in range(config.num_hidden_layers))
        if not self.is_plt:  # v1 keeps its gates at the top level: model.gate_projections.{i}
            self.gate_projections = nn.ModuleList(
                ShardedLoopGate(config.num_attention_heads, config.head_dim, False, config.rms_norm_eps,
                                self.tp_size, self.tp_rank)
                for _ in range(config.num_hidden_layers))
        self.norm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = PLTRotaryEmbedding(config)
        self.state: SlotState | None = None

    def gate(self, layer: int) -> ShardedLoopGate:
        return self.layers[layer].self_attn.plt_gate if self.is_plt else self.gate_projections[layer]

    def loop_output(self, h: torch.Tensor) -> torch.Tensor:
        """H^r of a non-last loop: after the shared final norm when plt_normalize_per_loop."""
        return self.norm(h) if self.spec.normalize_per_loop else h

    def _slot_state(self, forward_batch: ForwardBatch, like: torch.Tensor) -> SlotState:
        if self.state is None:  # first forward: SGLang's warm-up, before any CUDA graph capture
            attn = self.layers[0].self_attn
            slots = get_req_to_token_pool().req_to_token.shape[0]
            self.state = SlotState(len(self.layers), self.spec.num_loops, self.spec.window, slots,
                                   attn.num_kv_heads, attn.head_dim, self.config.hidden_size, like.dtype,
                                   like.device)
        return self.state

    def _pool(self, forward_batch: ForwardBatch, layer: int):
        pool = get_token_to_kv_pool()  # the pools of the ForwardContext SGLang publishes for this forward
        return pool.get_key_buffer(layer), pool.get_value_buffer(layer)

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        """The last loop's hidden states after the final norm: [tokens, d]."""
        mode = forward_batch.forward_mode
        if mode.is_idle():
            return self.embed_tokens(input_ids)
        embeds = self.embed_tokens(input_ids)
        state = self._slot_state(forward_batch, embeds)
        cos, sin = self.rotary_emb(positions[None], embeds.dtype)
        if mode.is_decode():
            if self.spec.clp and self.spec.num_loops > 1:
                h = self._decode_rows(embeds, positions, cos, sin, forward_batch, state)
            else:
                h = self._decode_sequential(embeds, positions, cos, sin, forward_batch, state)
        elif mode == ForwardMode.EXTEND:
            h = self._extend(embeds, cos, sin, forward_batch, state)
        else:  # MIXED, TARGET_VERIFY, DRAFT_EXTEND*, SPLIT_PREFILL, ...
            raise ModelError(f"forward mode {mode.name} is not supported by the PLT plugin (no speculative "
                             "decoding, no mixed chunks, no split prefill)")
        return self.norm(h)

    def _extend(self, embeds, cos, sin, forward_batch: ForwardBatch, state: SlotState):
        spec, window = self.spec, self.spec.window
        starts = list(forward_batch.extend_prefix_lens_cpu)
        lengths = list(forward_batch.extend_seq_lens_cpu)
        slots_cpu = [int(s) for s in forward_batch.req_pool_indices.tolist()]
        rids = forward_batch.rids or [None] * len(slots_cpu)
        self._claim_slots(state, slots_cpu, starts, rids)
        dev = embeds.device
        slots = torch.tensor(slots_cpu, device=dev)
        plan = local_plan(starts, lengths, slots_cpu, window).to(dev)
        req_to_token = get_req_to_token_pool().req_to_token
        global_index = torch.cat([req_to_token[s, : st + n] for s, st, n in zip(slots_cpu, starts, lengths)]).long()
        cu_q = torch.tensor([0] + lengths, device=dev).cumsum(0).to(torch.int32)
        cu_k = torch.tensor([0] + [st + n for st, n in zip(starts, lengths)], device=dev).cumsum(0).to(torch.int32)
        max_q, max_k = max(lengths), max(st + n for st, n in zip(starts, lengths))
        first, last = cu_q[:-1].long(), cu_q[1:].long() - 1
        old_carry = state.carry[:, slots].clone()
        loop_out = h = None
        for r in range(spec.num_loops):
            if r == 0:
                h = embeds
            elif spec.clp:
                h = clp_input(spec.emb_scale, spec.hidden_scale, embeds,
                              shift_packed(loop_out, first, old_carry[r - 1]))
            else:
                h = loop_out
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                q, k, v = attn.qkv(layer.input_layernorm(h), cos, sin)
                if r == 0:
                    n = q.shape[0]
                    out = attn.attn(q.reshape(n, -1), k.reshape(n, -1), v.reshape(n, -1), forward_batch)
                else:
                    rk, rv = state.ring_k[i][:, r - 1], state.ring_v[i][:, r - 1]
                    k_loc, v_loc = plan.gather(rk, k), plan.gather(rv, v)
                    plan.write(rk, k)
                    plan.write(rv, v)
                    k_pool, v_pool = self._pool(forward_batch, attn.attn.layer_id)
                    out = gswa_prefill(q, k_pool[global_index], v_pool[global_index], cu_q, cu_k, max_q, max_k,
                                       k_loc=k_loc, v_loc=v_loc, cu_seqlens_kl=plan.cu_seqlens_kl,
                                       gate=self.gate(i)(h, q), window=window, scale=attn.scale)
                h = layer.finish(h, out)
            if r < spec.num_loops - 1:
                loop_out = self.loop_output(h) if spec.clp else h
                if spec.clp:
                    state.carry[r, slots] = loop_out[last]
        state.length[slots] = torch.tensor([st + n for st, n in zip(starts, lengths)], device=dev)
        return h

    def _claim_slots(self, state: SlotState, slots, starts, rids) -> None:
        """A fresh request (no prefix) gets a zero carry; a prefix is accepted only where this slot
        computed it for the same request (chunked prefill), else its carry and rings are not there."""
        lengths = state.length[torch.tensor(slots, device=state.length.device)].tolist()
        for slot, start, rid, held in zip(slots, starts, rids, lengths):
            if start == 0:
                state.carry[:, slot] = 0
                state.owner[slot] = rid
            elif state.owner[slot] != rid or held != start:
                raise ModelError(
                    f"request {rid} continues from a cached prefix of {start} tokens that slot {slot} did not "
                    "compute: a PLT prefix is reusable only with the CLP carry and rings of its last token; "
                    "serve with --disable-radix-cache")

    def _decode_tables(self, forward_batch: ForwardBatch):
        slots = forward_batch.req_pool_indices.long()
        tables = get_req_to_token_pool().req_to_token[slots]  # pages of one token
        return slots, tables, forward_batch.seq_lens.to(torch.int32)

    def _paged(self, forward_batch: ForwardBatch, layer: int):
        k_pool, v_pool = self._pool(forward_batch, layer)
        return k_pool.view(-1, 1, *k_pool.shape[-2:]), v_pool.view(-1, 1, *v_pool.shape[-2:])

    def _write_loop0(self, forward_batch: ForwardBatch, attn: PLTAttention, k, v) -> None:
        get_token_to_kv_pool().set_kv_buffer(attn.attn, forward_batch.out_cache_loc, k, v, attn.attn.k_scale,
                                             attn.attn.v_scale)

    def _decode_rows(self, embeds, positions, cos, sin, forward_batch: ForwardBatch, state: SlotState):
        """One new token per request, all R loops as R rows of one pass (plt_spec.md 4.1)."""
        spec, rows, batch = self.spec, self.spec.num_loops, embeds.shape[0]
        slots, tables, seq_lens = self._decode_tables(forward_batch)
        carry = state.carry[:, slots]  # [R-1, B, d]
        h = torch.cat([embeds] + [clp_input(spec.emb_scale, spec.hidden_scale, embeds, carry[r - 1])
                                  for r in range(1, rows)])  # [R*B, d], loop-major
        cos, sin = cos.repeat(1, rows, 1), sin.repeat(1, rows, 1)
        ring_pos = positions.long() % spec.window
        slots32 = slots.to(torch.int32)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            q, k, v = attn.qkv(layer.input_layernorm(h), cos, sin)
            self._write_loop0(forward_batch, attn, k[:batch], v[:batch])
            gates = []
            for r in range(1, rows):
                part = slice(r * batch, (r + 1) * batch)
                state.ring_k[i][slots, r - 1, ring_pos] = k[part]
                state.ring_v[i][slots, r - 1, ring_pos] = v[part]
                gates.append(self.gate(i)(h[part], q[part]))
            k_cache, v_cache = self._paged(forward_batch, attn.attn.layer_id)
            rows_q = q.view(rows, batch, attn.num_heads, attn.head_dim).transpose(0, 1)
            out = gswa_decode(rows_q, k_cache, v_cache, tables, seq_lens, state.ring_k[i], state.ring_v[i],
                              slots32, torch.stack(gates, 1), scale=attn.scale)  # [B, R, H, D]
            h = layer.finish(h, out.transpose(0, 1).reshape(rows * batch, attn.num_heads, attn.head_dim))
        h = h.view(rows, batch, -1)
        state.carry[:, slots] = self.loop_output(h[:-1])
        state.length[slots] = seq_lens.long()
        return h[-1]

    def _decode_sequential(self, embeds, positions, cos, sin, forward_batch: ForwardBatch, state: SlotState):
        """One new token per request, loops one after another (v1, or R = 1)."""
        spec = self.spec
        slots, tables, seq_lens = self._decode_tables(forward_batch)
        ring_pos = positions.long() % spec.window
        ring_valid = ring_entry_valid(positions.long(), spec.window)
        h = embeds
        for r in range(spec.num_loops):
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                q, k, v = attn.qkv(layer.input_layernorm(h), cos, sin)
                if r == 0:
                    self._write_loop0(forward_batch, attn, k, v)
                k_cache, v_cache = self._paged(forward_batch, attn.attn.layer_id)
                out = gswa_decode(q[:, None], k_cache, v_cache, tables, seq_lens, None, None, None, None,
                                  scale=attn.scale)[:, 0]
                if r > 0:
                    rk, rv = state.ring_k[i][:, r - 1], state.ring_v[i][:, r - 1]
                    rk[slots, ring_pos] = k
                    rv[slots, ring_pos] = v
                    local = ring_attention(q, rk[slots], rv[slots], ring_valid, attn.scale)
                    out = gate_mix(self.gate(i)(h, q)[..., None], out, local)
                h = layer.finish(h, out)
        state.length[slots] = seq_lens.long()
        return h


def _normalise_config(config) -> None:
    """Fill what this project's config classes derive but a checkpoint's own (remote-code) config class,
    written for older transformers, may lack: head_dim, attention_bias, and RoPE as ``rope_parameters``."""
    for name, default in (("attention_bias", False), ("hidden_act", "silu"), ("tie_word_embeddings", False)):
        if getattr(config, name, None) is None:
            setattr(config, name, default)
    if getattr(config, "head_dim", None) is None:
        config.head_dim = config.hidden_size // config.num_attention_heads
    if not getattr(config, "rope_parameters", None):
        rope = dict(getattr(config, "rope_scaling", None) or {})
        rope["rope_type"] = rope.pop("type", None) or rope.get("rope_type") or "default"
        rope.setdefault("rope_theta", float(getattr(config, "rope_theta", None) or 500000.0))
        config.rope_parameters = rope


class _SGLangLoopCoderForCausalLM(nn.Module):
    def __init__(self, config, quant_config=None, prefix: str = ""):
        super().__init__()
        if getattr(config, "model_type", None) not in self.model_types:
            raise ModelError(f"{type(self).__name__} serves model_type {self.model_types[0]!r}, "
                             f"config has {getattr(config, 'model_type', None)!r}")
        self.config = config
        _normalise_config(config)
        self.model = IQuestLoopSGLangModel(config, quant_config, prefix="model")
        if config.tie_word_embeddings:
            self.lm_head = self.model.embed_tokens
        else:
            self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, quant_config=quant_config,
                                          prefix="lm_head")
        self.logits_processor = LogitsProcessor(config)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch,
                input_embeds: torch.Tensor | None = None, **kwargs):
        if input_embeds is not None:
            raise ModelError("input_embeds is not supported: the CLP re-injection needs token embeddings")
        hidden = self.model(input_ids, positions, forward_batch)
        return self.logits_processor(input_ids, hidden, self.lm_head, forward_batch)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load checkpoint tensors by their released names (gates included); every parameter must be
        covered and every tensor must have a place, else CheckpointError names them."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        is_plt, layers = self.model.is_plt, self.config.num_hidden_layers
        for name, tensor in weights:
            where = target(name, is_plt, layers)
            if where is None:
                continue
            if where.param == "lm_head.weight" and self.config.tie_word_embeddings:
                continue
            param = params.get(where.param)
            if param is None:
                raise CheckpointError(f"weight {name!r} maps to {where.param!r}, which this model does not have "
                                      "(check plt_gate_use_hidden_states and attention_bias in config.json)")
            loader = getattr(param, "weight_loader", default_weight_loader)
            if where.shard is None:
                loader(param, tensor)
            else:
                loader(param, tensor, where.shard)
            loaded.add(where.param)
        missing = sorted(set(params) - loaded)
        if missing:
            raise CheckpointError(f"checkpoint has no weights for: {', '.join(missing)}")
        return loaded


class IQuestPLTCoderForCausalLM(_SGLangLoopCoderForCausalLM):
    """LoopCoder-V2 (architecture IQuestPLTCoderForCausalLM, model_type iquestpltcoder)."""

    model_types = ("iquestpltcoder",)


class IQuestLoopCoderForCausalLM(_SGLangLoopCoderForCausalLM):
    """IQuest LoopCoder v1 (architecture IQuestLoopCoderForCausalLM, model_type iquestloopcoder)."""

    model_types = ("iquestloopcoder",)


EntryClass = [IQuestPLTCoderForCausalLM, IQuestLoopCoderForCausalLM]
