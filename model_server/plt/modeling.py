"""LoopCoder-V2 (PLT) and IQuest LoopCoder v1 in PyTorch, loadable with transformers' Auto classes.

Read top-down: norm, rotary, gate, attention, MLP, layer, model (the loop schedule), causal-LM head.
Parameter names equal the checkpoint names (plt_spec.md section 8), so loading is a plain state dict.

Two schedules share the layers (plt_spec.md sections 3 and 4):
- ``_run_chunk``: the loops one after another over a chunk of T new tokens (prefill, full forward,
  and every v1 step). Loop r >= 1 of a PLT model takes a*E_t + b*H^{r-1}_{t-1}, the previous slot's
  output of loop r-1 (zero before the first token, the cache's carry across chunks).
- ``_run_decode_rows``: one new token of a PLT model, all R loops as R rows of ONE pass through the
  layers. Valid because loop r at slot t never needs loop r-1 at slot t, only its output at t-1 (the
  carry) and loop-0 K/V up to t, which row 0 writes at each layer before any row reads it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from ..errors import CheckpointError, ModelError
from .cache import PLTCache
from .configuration import IQuestLoopCoderConfig, IQuestPLTCoderConfig, LoopSpec
from .plt_math import clp_input, gate_from_hidden, gate_from_query, gate_mix, rms_norm


class PLTRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class PLTRotaryEmbedding(nn.Module):
    """cos/sin for absolute positions; the same positions in every loop (no RoPE offset across loops)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self._cache: dict[torch.device, tuple[torch.Tensor, float]] = {}

    def _inv_freq(self, device) -> tuple[torch.Tensor, float]:
        # Computed on first use, not stored as a buffer: meta-device init during from_pretrained never
        # touches it, and the value is a pure function of the config.
        if device not in self._cache:
            rope_type = self.config.rope_parameters.get("rope_type", "default")
            if rope_type == "default":
                dim = self.config.head_dim
                base = self.config.rope_parameters["rope_theta"]
                inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
                scale = 1.0
            else:
                inv, scale = ROPE_INIT_FUNCTIONS[rope_type](self.config, None)
            self._cache[device] = (inv.to(device=device, dtype=torch.float32), float(scale))
        return self._cache[device]

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv, scale = self._inv_freq(positions.device)
        freqs = positions.float()[..., None] * inv  # [B, T, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)
        return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [N, heads, T, D]; cos/sin [N, T, D]."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class LoopGate(nn.Module):
    """Per-query-head mixing weight g = sigmoid(w_h . input + b_h) of the global branch.

    Hidden mode (LoopCoder-V2 ``plt_gate``): input = RMSNorm_gate(residual entering the layer), W [H, d].
    Query mode (IQuest v1 ``gate_projections``, PLT with the flag off): input = post-RoPE query of head h,
    W [H, head_dim].
    """

    def __init__(self, num_heads: int, in_features: int, from_hidden: bool, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_heads, in_features))
        self.bias = nn.Parameter(torch.zeros(num_heads))
        self.from_hidden = from_hidden
        if from_hidden:
            self.gate_norm = PLTRMSNorm(in_features, eps)

    def forward(self, residual: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """residual [N, T, d], query [N, H, T, D] -> gate [N, H, T, 1]."""
        if self.from_hidden:
            gate = gate_from_hidden(residual, self.gate_norm.weight, self.gate_norm.eps, self.weight, self.bias)
        else:
            gate = gate_from_query(query.transpose(1, 2), self.weight, self.bias)
        return gate.transpose(1, 2)[..., None]


def attend(q, k, v, mask, scale, want_probs=False):
    """GQA attention. q [N, H, Tq, D], k/v [N, G, Tk, D], mask [N, 1, Tq, Tk] bool (True = may attend)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    if not want_probs:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale), None
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return torch.matmul(probs, v.float()).to(q.dtype), probs


@dataclass
class ChunkContext:
    """What every layer needs for one chunk of T new slots (built once per forward)."""

    cache: PLTCache
    start: int  # first new slot
    cos: torch.Tensor
    sin: torch.Tensor
    global_mask: torch.Tensor | None  # [B, 1, T, start + T]; None on the kernel path
    local_mask: torch.Tensor | None  # [B, 1, T, n_old + T], keys: ring slots lo..start-1 then the chunk
    local_old_slots: torch.Tensor  # ring slots of the old local keys (lo..start-1), as absolute slots
    window: int
    probe: object | None = None
    use_kernels: bool = False


@dataclass
class DecodeContext:
    """What every layer needs for one fused decode step (one new slot, R rows per request)."""

    cache: PLTCache
    slot: int
    cos: torch.Tensor  # [B, 1, D]
    sin: torch.Tensor
    global_mask: torch.Tensor | None  # [B, 1, 1, slot + 1]; None on the kernel path
    ring_mask: torch.Tensor | None  # [B, 1, 1, window]
    use_kernels: bool = False


class PLTAttention(nn.Module):
    def __init__(self, config, layer_idx: int, spec_gate_here: bool):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim ** -0.5
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        if spec_gate_here:  # PLT keeps its gate inside the attention module as ``plt_gate``
            from_hidden = config.plt_gate_use_hidden_states
            in_features = config.hidden_size if from_hidden else self.head_dim
            self.plt_gate = LoopGate(self.num_heads, in_features, from_hidden, config.rms_norm_eps)

    def _qkv(self, x, cos, sin):
        n, t, _ = x.shape
        q = self.q_proj(x).view(n, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(n, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(n, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _out(self, o):
        n, _, t, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(n, t, self.num_heads * self.head_dim))

    def forward_chunk(self, x, residual, loop: int, ctx: ChunkContext, gate: LoopGate | None):
        """Loop ``loop`` over the chunk's T slots: x = normed input [B, T, d], residual = layer input."""
        q, k, v = self._qkv(x, ctx.cos, ctx.sin)
        if ctx.use_kernels:
            return self._chunk_kernels(q, k, v, residual, loop, ctx, gate)
        cache, layer, probe = ctx.cache, self.layer_idx, ctx.probe
        if loop == 0:
            keys, values = cache.append_global(layer, k, v)
        else:
            keys, values = cache.global_kv(layer)
        o_glob, probs = attend(q, keys, values, ctx.global_mask, self.scale, want_probs=probe is not None)
        if probe is not None:
            probe.on_attention(loop, layer, probs)
        if loop == 0:
            return self._out(o_glob)
        # Local branch: this loop's own K/V of the last ``window`` slots, the chunk's included. Old ring
        # entries are read before the chunk is written over them.
        ring_k, ring_v = cache.ring(loop, layer, k)
        old = ctx.local_old_slots % ctx.window
        local_k = torch.cat([ring_k.index_select(2, old), k], dim=2)
        local_v = torch.cat([ring_v.index_select(2, old), v], dim=2)
        o_loc, _ = attend(q, local_k, local_v, ctx.local_mask, self.scale)
        cache.write_ring(loop, layer, ctx.start, k, v)
        g = gate(residual, q)
        if probe is not None:
            probe.on_gate(loop, layer, g[..., 0])
        return self._out(gate_mix(g, o_glob, o_loc))

    def _chunk_kernels(self, q, k, v, residual, loop, ctx: ChunkContext, gate):
        """forward_chunk through the packed-varlen G-SWA kernel (Triton on CUDA, its reference on CPU)."""
        from ..kernels import gswa_prefill

        cache, layer = ctx.cache, self.layer_idx
        b, h, t, d = q.shape
        if loop == 0:
            cache.append_global(layer, k, v)
        keys, values = cache.key[layer], cache.value[layer]  # [B, S, G, D]
        s, g = keys.shape[1], keys.shape[2]

        def offsets(n):
            return torch.arange(0, (b + 1) * n, n, dtype=torch.int32, device=q.device)

        local = {}
        if loop > 0:
            ring_k, ring_v = cache.ring_tensors(layer, k)
            old = ctx.local_old_slots % ctx.window
            local_k = torch.cat([ring_k[:, loop - 1].index_select(1, old), k.transpose(1, 2)], dim=1)
            local_v = torch.cat([ring_v[:, loop - 1].index_select(1, old), v.transpose(1, 2)], dim=1)
            n_local = local_k.shape[1]
            cache.write_ring(loop, layer, ctx.start, k, v)
            mix = gate(residual, q)[..., 0].transpose(1, 2).reshape(b * t, h)
            local = dict(k_loc=local_k.reshape(b * n_local, g, d), v_loc=local_v.reshape(b * n_local, g, d),
                         cu_seqlens_kl=offsets(n_local), gate=mix, window=ctx.window)
        out = gswa_prefill(q.transpose(1, 2).reshape(b * t, h, d), keys.reshape(b * s, g, d),
                           values.reshape(b * s, g, d), offsets(t), offsets(s), t, s, scale=self.scale, **local)
        return self.o_proj(out.view(b, t, h * d))

    def forward_rows(self, x, residual, num_rows: int, ctx: DecodeContext, gate: LoopGate):
        """Fused decode: x [R*B, 1, d], rows ordered loop-major (row r of request b at r*B + b)."""
        batch = x.shape[0] // num_rows
        cos = ctx.cos.repeat(num_rows, 1, 1)
        sin = ctx.sin.repeat(num_rows, 1, 1)
        q, k, v = self._qkv(x, cos, sin)
        cache, layer = ctx.cache, self.layer_idx
        if ctx.use_kernels:
            return self._rows_kernels(q, k, v, residual, num_rows, batch, ctx, gate)
        # Loop 0 writes the new slot's K/V first; every row's global branch then reads it.
        keys, values = cache.append_global(layer, k[:batch], v[:batch])
        # All R rows of a request attend the same loop-0 keys: fold rows into the query length.
        q_rows = q.view(num_rows, batch, self.num_heads, 1, self.head_dim)
        q_fold = q_rows.permute(1, 2, 0, 3, 4).reshape(batch, self.num_heads, num_rows, self.head_dim)
        o_glob, _ = attend(q_fold, keys, values, ctx.global_mask.expand(-1, -1, num_rows, -1), self.scale)
        o_glob = o_glob.view(batch, self.num_heads, num_rows, 1, self.head_dim).permute(2, 0, 1, 3, 4)
        outs = [o_glob[0]]
        for r in range(1, num_rows):
            rows = slice(r * batch, (r + 1) * batch)
            cache.write_ring(r, layer, ctx.slot, k[rows], v[rows])
            ring_k, ring_v = cache.ring(r, layer, k)
            o_loc, _ = attend(q[rows], ring_k, ring_v, ctx.ring_mask, self.scale)
            g = gate(residual[rows], q[rows])
            outs.append(gate_mix(g, o_glob[r], o_loc))
        return self._out(torch.cat(outs, dim=0))

    def _rows_kernels(self, q, k, v, residual, num_rows, batch, ctx: DecodeContext, gate):
        """forward_rows through the one-launch decode kernel: all R rows share each loop-0 K/V read."""
        from ..kernels import gswa_decode

        cache, layer, device = ctx.cache, self.layer_idx, q.device
        cache.append_global(layer, k[:batch], v[:batch])
        mixes = []
        for r in range(1, num_rows):
            rows = slice(r * batch, (r + 1) * batch)
            cache.write_ring(r, layer, ctx.slot, k[rows], v[rows])
            mixes.append(gate(residual[rows], q[rows])[:, :, 0, 0])  # [B, H]
        ring_k, ring_v = cache.ring_tensors(layer, k)
        seq_lens = torch.full((batch,), ctx.slot + 1, dtype=torch.int32, device=device)
        rows_q = q.view(num_rows, batch, self.num_heads, self.head_dim).transpose(0, 1)  # [B, R, H, D]
        out = gswa_decode(rows_q, cache.key[layer], cache.value[layer], None, seq_lens, ring_k, ring_v,
                          torch.arange(batch, dtype=torch.int32, device=device), torch.stack(mixes, 1),
                          scale=self.scale)
        return self.o_proj(out.transpose(0, 1).reshape(num_rows * batch, 1, self.num_heads * self.head_dim))


class PLTMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.hidden_act != "silu":
            raise ModelError(f"unsupported hidden_act {config.hidden_act!r}; LoopCoder uses 'silu'")
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class PLTDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx: int, gate_in_attention: bool):
        super().__init__()
        self.self_attn = PLTAttention(config, layer_idx, gate_in_attention)
        self.mlp = PLTMLP(config)
        self.input_layernorm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, h, attention_fn):
        h = h + attention_fn(self.input_layernorm(h), h)
        return h + self.mlp(self.post_attention_layernorm(h))


class IQuestLoopPreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    _no_split_modules = ["PLTDecoderLayer"]
    _is_stateful = True  # the CLP carry cannot be rolled back: no assisted/speculative generation
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LoopGate):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)


class IQuestLoopModel(IQuestLoopPreTrainedModel):
    """Embedding, the shared layers, the final norm, and the loop schedule."""

    def __init__(self, config):
        super().__init__(config)
        self.is_plt = isinstance(config, IQuestPLTCoderConfig)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            PLTDecoderLayer(config, i, gate_in_attention=self.is_plt) for i in range(config.num_hidden_layers)
        )
        if not self.is_plt:  # v1 keeps its gates at the top level: model.gate_projections.{i}
            self.gate_projections = nn.ModuleList(
                LoopGate(config.num_attention_heads, config.head_dim, False, config.rms_norm_eps)
                for _ in range(config.num_hidden_layers)
            )
        self.norm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = PLTRotaryEmbedding(config)
        # "auto": attention through the PLT kernels on CUDA (Triton), plain torch elsewhere; "kernels"
        # forces the kernel API (its PyTorch reference on CPU); "torch" forces the plain path. Batches
        # with padding and diagnostic probes always take the torch path (the kernels take no key mask).
        self.attention_impl = "auto"
        LoopSpec.from_config(config)  # validates the loop settings; warns once if config.num_loops overrides
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def loop_spec(self, num_loops: int | None = None) -> LoopSpec:
        """Loop settings; a call-time ``num_loops`` that differs from the trained count warns."""
        return LoopSpec.from_config(self.config, num_loops, warn=num_loops is not None)

    def _gate(self, layer: int) -> LoopGate:
        return self.layers[layer].self_attn.plt_gate if self.is_plt else self.gate_projections[layer]

    def forward(self, input_ids, cache: PLTCache, new_valid: torch.Tensor, spec: LoopSpec,
                position_ids=None, fused_decode: bool = True, probe=None) -> torch.Tensor:
        """Run all loops over the new tokens, updating ``cache``; return the last loop's hidden states
        [B, T, d] (before the final norm)."""
        cache.check_loops(spec.num_loops)
        start = cache.seen
        positions = cache.begin_chunk(new_valid)
        if position_ids is not None:
            positions = position_ids
        embeds = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(positions, embeds.dtype)
        use_kernels = self.attention_impl == "kernels" or (self.attention_impl == "auto" and embeds.is_cuda)
        use_kernels = use_kernels and probe is None and bool(cache.key_valid.all())
        if spec.clp and spec.num_loops > 1 and input_ids.shape[1] == 1 and fused_decode and probe is None:
            hidden = self._run_decode_rows(embeds, cache, spec, start, cos, sin, use_kernels)
        else:
            hidden = self._run_chunk(embeds, cache, spec, start, cos, sin, probe, use_kernels)
        cache.end_chunk(input_ids.shape[1])
        return hidden

    # -- loops one after another over a chunk ------------------------------------------------------
    def _run_chunk(self, embeds, cache, spec, start, cos, sin, probe, use_kernels=False):
        batch, t, d = embeds.shape
        valid = cache.key_valid  # [B, S] incl. the chunk
        device = embeds.device
        old_slots = torch.arange(max(0, start - spec.window + 1), start, device=device)
        # The kernels compute causality and the band from positions; only the torch path needs masks
        # (built as [B, T, S] booleans, which a long prompt would make large).
        global_mask = local_mask = None
        if not use_kernels:
            global_mask, local_mask = _chunk_masks(valid, start, t, old_slots, spec.window)
        ctx = ChunkContext(cache, start, cos, sin, global_mask, local_mask, old_slots, spec.window, probe,
                           use_kernels)
        carry = cache.carry_or_zeros(batch, d, embeds.dtype, device)
        # Validity of the slot before each new slot: the CLP input from a padding slot is zero.
        prev_valid = torch.cat([valid[:, start - 1:start] if start > 0 else valid.new_zeros(batch, 1),
                                valid[:, start:start + t - 1]], dim=1)[..., None]
        new_carry = []
        loop_out = None
        for r in range(spec.num_loops):
            if r == 0:
                h = embeds
            elif spec.clp:
                shifted = torch.cat([carry[r - 1][:, None], loop_out[:, :-1]], dim=1) * prev_valid
                h = clp_input(spec.emb_scale, spec.hidden_scale, embeds, shifted)
            else:
                h = loop_out
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                h = layer(h, lambda x, res, a=attn, i=i: a.forward_chunk(x, res, r, ctx, self._gate(i) if r else None))
            if probe is not None:
                probe.on_loop_output(r, h)
            if r < spec.num_loops - 1:
                loop_out = self.norm(h) if spec.normalize_per_loop else h
                new_carry.append(loop_out[:, -1])
        if spec.clp and new_carry:
            cache.carry = torch.stack(new_carry)
        return h

    # -- one new token, all loops in one pass ------------------------------------------------------
    def _run_decode_rows(self, embeds, cache, spec, slot, cos, sin, use_kernels=False):
        batch, _, d = embeds.shape
        rows = spec.num_loops
        valid = cache.key_valid
        carry = cache.carry_or_zeros(batch, d, embeds.dtype, embeds.device)
        prev_valid = (valid[:, slot - 1] if slot > 0 else valid.new_zeros(batch))[:, None, None]
        inputs = [embeds] + [
            clp_input(spec.emb_scale, spec.hidden_scale, embeds, carry[r - 1][:, None] * prev_valid)
            for r in range(1, rows)
        ]
        h = torch.cat(inputs, dim=0)  # [R*B, 1, d]
        global_mask = ring_mask = None
        if not use_kernels:
            global_mask, ring_mask = _decode_masks(valid, slot, spec.window)
        ctx = DecodeContext(cache, slot, cos, sin, global_mask, ring_mask, use_kernels)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer(h, lambda x, res, a=attn, i=i: a.forward_rows(x, res, rows, ctx, self._gate(i)))
        h = h.view(rows, batch, 1, d)
        outs = self.norm(h[:-1]) if spec.normalize_per_loop else h[:-1]
        cache.carry = outs[:, :, 0]
        return h[-1]


def _chunk_masks(valid, start: int, t: int, old_slots, window: int):
    """Attention masks of a chunk's T queries (slots start..start+T-1), True = may attend.

    global [B, 1, T, start+T]: causal over loop-0 keys; local [B, 1, T, n_old+T]: the band of ``window``
    keys over the ring's old slots then the chunk. A padding slot may attend only itself: it stays
    finite and no real token ever sees it.
    """
    q_slots = torch.arange(start, start + t, device=valid.device)
    k_slots = torch.arange(start + t, device=valid.device)
    l_slots = torch.cat([old_slots, q_slots])
    self_only = (k_slots[None, :] == q_slots[:, None])[None]
    global_mask = ((k_slots[None, :] <= q_slots[:, None])[None] & valid[:, None, :]) | self_only
    band = (l_slots[None, :] <= q_slots[:, None]) & (l_slots[None, :] > q_slots[:, None] - window)
    local_mask = (band[None] & valid[:, l_slots][:, None, :]) | (l_slots[None, :] == q_slots[:, None])[None]
    return global_mask[:, None], local_mask[:, None]


def _decode_masks(valid, slot: int, window: int):
    """Masks of one decode step: global [B, 1, 1, slot+1] and ring [B, 1, 1, window]."""
    global_mask = valid[:, None, None, :].clone()
    global_mask[..., slot] = True
    # Ring entry e holds the latest slot p <= slot with p % window == e.
    entries = torch.arange(window, device=valid.device)
    ring_slots = slot - ((slot - entries) % window)
    ring_mask = valid[:, ring_slots.clamp(min=0)] & (ring_slots >= 0)
    ring_mask[:, slot % window] = True
    return global_mask, ring_mask[:, None, None, :]


class _LoopCoderForCausalLM(IQuestLoopPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = IQuestLoopModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loader, made strict: missing, unexpected or wrongly shaped weights raise
        CheckpointError listing them (transformers only warns)."""
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except RuntimeError as exc:
            if "ignore_mismatched_sizes" not in str(exc) or kwargs.get("ignore_mismatched_sizes"):
                raise
            # transformers refuses mismatched shapes without saying which; load again to list them.
            model, info = super().from_pretrained(*args, output_loading_info=True,
                                                  ignore_mismatched_sizes=True, **kwargs)
        problems = []
        if info.get("missing_keys"):
            problems.append(f"missing weights: {', '.join(sorted(info['missing_keys']))}")
        if info.get("unexpected_keys"):
            problems.append(f"unexpected weights: {', '.join(sorted(info['unexpected_keys']))}")
        for mismatch in info.get("mismatched_keys") or []:
            problems.append(_describe_mismatch(mismatch, model.config))
        if problems:
            raise CheckpointError("checkpoint does not match the config: " + "; ".join(problems))
        return (model, info) if want_info else model

    # -- loops ---------------------------------------------------------------------------------------
    @property
    def num_loops(self) -> int:
        return self.model.loop_spec().num_loops

    def new_cache(self, num_loops: int | None = None) -> PLTCache:
        spec = self.model.loop_spec(num_loops)
        return PLTCache(self.config.num_hidden_layers, spec.num_loops, spec.window)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: PLTCache | None = None,
        use_cache: bool | None = None,
        num_loops: int | None = None,
        logits_to_keep: int = 0,
        fused_decode: bool = True,
        probe=None,
        return_dict: bool = True,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits of the last loop for the new tokens.

        ``past_key_values`` (a PLTCache) holds earlier tokens; new tokens are appended. attention_mask
        may cover the new tokens or the whole sequence (as generate() passes it); 0 marks left padding.
        ``fused_decode=False`` runs a one-token PLT step as R sequential passes (for comparison).
        """
        if kwargs.get("inputs_embeds") is not None:
            raise ModelError("inputs_embeds is not supported: the CLP re-injection needs token embeddings")
        if past_key_values is not None and not isinstance(past_key_values, PLTCache):
            raise ModelError(f"past_key_values must be a PLTCache, got {type(past_key_values).__name__}")
        spec = self.model.loop_spec(num_loops)
        cache = past_key_values if past_key_values is not None else PLTCache(
            self.config.num_hidden_layers, spec.num_loops, spec.window)
        batch, t = input_ids.shape
        if attention_mask is None:
            new_valid = torch.ones(batch, t, dtype=torch.bool, device=input_ids.device)
        else:
            new_valid = attention_mask[:, -t:].to(device=input_ids.device, dtype=torch.bool)
        hidden = self.model(input_ids, cache, new_valid, spec, position_ids=position_ids,
                            fused_decode=fused_decode, probe=probe)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(self.model.norm(hidden))
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return CausalLMOutputWithPast(logits=logits, past_key_values=cache if use_cache else None)

    # -- generate() integration --------------------------------------------------------------------
    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        if model_kwargs.get("past_key_values") is not None or generation_config.use_cache is False:
            return
        model_kwargs["past_key_values"] = self.new_cache(model_kwargs.get("num_loops"))


def _describe_mismatch(mismatch, config) -> str:
    name, ckpt_shape, model_shape = mismatch[0], tuple(mismatch[1]), tuple(mismatch[2])
    text = f"{name}: checkpoint {list(ckpt_shape)} vs expected {list(model_shape)}"
    if name.endswith("plt_gate.weight"):
        mode = "hidden-state" if ckpt_shape[-1] == config.hidden_size else "query"
        text += (f" (the checkpoint holds a {mode} gate; set plt_gate_use_hidden_states="
                 f"{str(mode == 'hidden-state').lower()} in config.json)")
    return text


class IQuestPLTCoderForCausalLM(_LoopCoderForCausalLM):
    config_class = IQuestPLTCoderConfig


class IQuestLoopCoderForCausalLM(_LoopCoderForCausalLM):
    config_class = IQuestLoopCoderConfig
