"""PLT maths shared by the HF model, the native engine and the SGLang plugin.

Each function is one equation of plt_spec.md (sections 3 and 5), written once so that every host of the
model computes it the same way. Nothing here owns state: callers pass the weights, the pools and the
per-request slots they keep.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in float32, cast back, then scaled (the Llama order the checkpoints use)."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def gate_from_hidden(residual: torch.Tensor, norm_weight: torch.Tensor, eps: float, weight: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """Hidden-mode gate g = sigmoid(W . RMSNorm_gate(u) + b): residual [..., d], W [H, d] -> [..., H]."""
    return torch.sigmoid(F.linear(rms_norm(residual, norm_weight, eps), weight, bias))


def gate_from_query(query: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Query-mode gate g_h = sigmoid(w_h . q_h + b_h): query [..., H, D] (post-RoPE), W [H, D] -> [..., H]."""
    return torch.sigmoid((query * weight).sum(-1) + bias)


def gate_mix(gate: torch.Tensor, o_glob: torch.Tensor, o_loc: torch.Tensor) -> torch.Tensor:
    """O = g * O_glob + (1 - g) * O_loc, per query head (gate broadcast over head_dim)."""
    return gate * o_glob + (1 - gate) * o_loc


def clp_input(emb_scale: float, hidden_scale: float, embeds: torch.Tensor, carried: torch.Tensor) -> torch.Tensor:
    """Loop r >= 1 input of a PLT model: a * E_t + b * H^{r-1}_{t-1}."""
    return emb_scale * embeds + hidden_scale * carried


def shift_packed(loop_out: torch.Tensor, first: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """H^{r-1}_{t-1} for packed sequences: loop_out [N, d] shifted one token to the right, and each
    sequence's first token (packed index ``first`` [S]) takes that sequence's carry [S, d]."""
    shifted = torch.cat([loop_out.new_zeros(1, loop_out.shape[-1]), loop_out[:-1]])
    shifted[first] = carry.to(shifted.dtype)
    return shifted


def sglang_sliding_window(window: int) -> int:
    """SGLang's ``sliding_window_size`` for a window of ``window`` keys, the current one included.

    SGLang counts the window exclusively (models pass ``sliding_window - 1``, "SGLang assumes
    exclusive"; a query at t sees keys t-size..t, size + 1 keys), as flash-attn's window_left does.
    A window of the current key alone has no SGLang spelling: RadixAttention stores
    ``sliding_window_size or -1``, so 0 means no window at all.
    """
    if window < 2:
        raise ValueError(f"SGLang cannot express a window of {window} key(s): its size 0 means unlimited")
    return window - 1


def keys_in_sglang_window(sliding_window_size: int) -> int:
    """Keys a query sees under SGLang's exclusive ``sliding_window_size`` (-1: unlimited)."""
    return -1 if sliding_window_size < 0 else sliding_window_size + 1


def ring_attention(q: torch.Tensor, ring_k: torch.Tensor, ring_v: torch.Tensor, valid: torch.Tensor,
                   scale: float) -> torch.Tensor:
    """q [B, H, D] over each request's ring [B, W, G, D] where valid [B, W] (GQA)."""
    rep = q.shape[1] // ring_k.shape[2]
    k = ring_k.repeat_interleave(rep, dim=2).transpose(1, 2)  # [B, H, W, D]
    v = ring_v.repeat_interleave(rep, dim=2).transpose(1, 2)
    out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=valid[:, None, None, :], scale=scale)
    return out[:, :, 0]


def ring_entry_valid(pos: torch.Tensor, window: int) -> torch.Tensor:
    """[B, W]: ring entry e holds position pos - ((pos - e) mod W), valid when that is >= 0."""
    entries = torch.arange(window, device=pos.device)
    return (pos[:, None] - ((pos[:, None] - entries[None]) % window)) >= 0


@dataclass
class LocalPlan:
    """Index plan of the local (ring) branch for packed chunks of new tokens.

    Chunk i covers positions start_i .. start_i + len_i - 1 of the request in ring slot slot_i. Its local
    keys are the ring entries of positions max(0, start_i - W + 1) .. start_i - 1 (written by earlier
    chunks) followed by the chunk's own tokens; after the chunk, the ring keeps its last W positions.
    """

    old_slot: torch.Tensor  # [n_old] ring slot of each old key
    old_pos: torch.Tensor  # [n_old] ring index (position % W) of each old key
    local_order: torch.Tensor  # gathers [old keys; chunk tokens] into packed per-chunk order
    ring_tok: torch.Tensor  # packed token index of every token the ring keeps
    ring_slot: torch.Tensor
    ring_pos: torch.Tensor
    cu_seqlens_kl: torch.Tensor  # int32 [chunks + 1]

    def to(self, device) -> "LocalPlan":
        return LocalPlan(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def gather(self, ring: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """Local keys (or values) in packed order: ring [slots, W, G, D] of one loop, new [N, G, D]."""
        return torch.cat([ring[self.old_slot, self.old_pos], new])[self.local_order]

    def write(self, ring: torch.Tensor, new: torch.Tensor) -> None:
        """Store the chunks' last W tokens of ``new`` [N, G, D] into ``ring`` [slots, W, G, D]."""
        ring[self.ring_slot, self.ring_pos] = new[self.ring_tok]


def local_plan(starts: list[int], lengths: list[int], slots: list[int], window: int,
               fresh: list[bool] | None = None) -> LocalPlan:
    """The LocalPlan of chunks (start, length, slot), packed in that order. A ``fresh`` chunk has no ring
    entries before it (the native engine's prefix-cache recompute starts that way): its local keys start
    at its own first token."""
    n_tok = sum(lengths)
    fresh = fresh or [False] * len(starts)
    lows = [s if f else max(0, s - window + 1) for s, f in zip(starts, fresh)]
    n_old = sum(s - lo for s, lo in zip(starts, lows))
    old_slot, old_pos, order, ring_tok, ring_slot, ring_pos, cu_l = [], [], [], [], [], [], [0]
    old_offset = tok_offset = 0
    for start, length, slot, lo in zip(starts, lengths, slots, lows):
        old = torch.arange(lo, start)
        order.append(torch.cat([old_offset + torch.arange(len(old)), n_old + tok_offset + torch.arange(length)]))
        old_offset += len(old)
        old_slot.append(torch.full((len(old),), slot))
        old_pos.append(old % window)
        keep = min(length, window)
        ring_tok.append(tok_offset + torch.arange(length - keep, length))
        ring_slot.append(torch.full((keep,), slot))
        ring_pos.append(torch.arange(start + length - keep, start + length) % window)
        tok_offset += length
        cu_l.append(cu_l[-1] + len(old) + length)
    assert tok_offset == n_tok

    def cat(parts):
        return torch.cat(parts).long() if parts else torch.zeros(0, dtype=torch.long)

    return LocalPlan(cat(old_slot), cat(old_pos), cat(order), cat(ring_tok), cat(ring_slot), cat(ring_pos),
                     torch.tensor(cu_l, dtype=torch.int32))
