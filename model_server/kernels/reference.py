"""PyTorch references for the PLT attention kernels: the exact maths, written for clarity, not speed.

They define the semantics the Triton kernels must match (docs/kernels.md) and are the CPU path of the
model. They compute in float32 (float64 when the inputs are float64) and return the query's dtype.

Conventions shared with the kernels:
- GQA: query head h reads KV head h // (H // G).
- Softmax over an empty key set (a local window with no key present) gives a zero output row.
- Scale defaults to head_dim ** -0.5 in both branches.
"""

from __future__ import annotations

import torch

LOCAL_WINDOW = 65  # LoopCoder-V2: plt_window_size[0] + 1 keys, self included (plt_spec.md 3.2)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float):
    """q [M, H, D], k/v [N, G, D], mask [M, N] (True = visible) -> [M, H, D]; empty rows give 0."""
    h, g = q.shape[1], k.shape[1]
    k = k.repeat_interleave(h // g, dim=1)
    v = v.repeat_interleave(h // g, dim=1)
    s = torch.einsum("mhd,nhd->hmn", q, k) * scale
    s = s.masked_fill(~mask[None], float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.nan_to_num(p, nan=0.0)  # rows with no visible key
    return torch.einsum("hmn,nhd->mhd", p, v)


def _check_gqa(q: torch.Tensor, k: torch.Tensor) -> None:
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"head_dim mismatch: q {q.shape[-1]} vs k {k.shape[-1]}")
    if q.shape[-2] % k.shape[-2]:
        raise ValueError(f"query heads {q.shape[-2]} not a multiple of KV heads {k.shape[-2]}")


def gswa_prefill_reference(q, k0, v0, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                           k_loc=None, v_loc=None, cu_seqlens_kl=None, gate=None, window=LOCAL_WINDOW,
                           scale=None):
    """Packed varlen prefill/extend attention; loop 0 (k_loc None) or gated sliding-window (loop r>=1).

    Sequence i's queries are the last len_q_i of its len_k_i absolute positions; a query at position p sees
    global keys 0..p and local keys (right-aligned to the same end) at positions p-window+1..p.
    o = gate * O_glob + (1 - gate) * O_loc per query head; without k_loc, o = O_glob.
    """
    _check_gqa(q, k0)
    ct = _compute_dtype(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    ckl = cu_seqlens_kl.tolist() if k_loc is not None else None
    if k_loc is not None and (gate is None or cu_seqlens_kl is None):
        raise ValueError("local branch needs gate and cu_seqlens_kl")
    out = torch.empty(q.shape, dtype=ct, device=q.device)
    for i in range(len(cq) - 1):
        qs, qe, ks, ke = cq[i], cq[i + 1], ck[i], ck[i + 1]
        lq, lk = qe - qs, ke - ks
        if lq == 0:
            continue
        if lq > lk:
            raise ValueError(f"sequence {i}: {lq} queries but only {lk} keys")
        qi = q[qs:qe].to(ct)
        pos_q = torch.arange(lk - lq, lk, device=q.device)
        pos_k = torch.arange(lk, device=q.device)
        o = _masked_attention(qi, k0[ks:ke].to(ct), v0[ks:ke].to(ct), pos_k[None, :] <= pos_q[:, None], scale)
        if k_loc is not None:
            ls, le = ckl[i], ckl[i + 1]
            pos_l = torch.arange(lk - (le - ls), lk, device=q.device)
            band = (pos_l[None, :] <= pos_q[:, None]) & (pos_l[None, :] > pos_q[:, None] - window)
            o_loc = _masked_attention(qi, k_loc[ls:le].to(ct), v_loc[ls:le].to(ct), band, scale)
            g = gate[qs:qe].to(ct)[:, :, None]
            o = g * o + (1 - g) * o_loc
        out[qs:qe] = o
    return out.to(q.dtype)


def request_keys(k_cache, v_cache, block_table, b: int, n: int):
    """The first n loop-0 keys and values of request b: [n, G, D] each, from its blocks of a paged cache
    [num_blocks, block_size, G, D], or from row b of a contiguous cache [B, S_max, G, D] (block_table None)."""
    if block_table is None:
        return k_cache[b, :n], v_cache[b, :n]
    blocks = block_table[b, : -(-n // k_cache.shape[1])].long()
    return (k_cache.index_select(0, blocks).flatten(0, 1)[:n], v_cache.index_select(0, blocks).flatten(0, 1)[:n])


def gswa_decode_reference(q, k_cache, v_cache, block_table, seq_lens, ring_k, ring_v, ring_slots, gate, *,
                          scale=None):
    """One decode step for all R loop rows of every request (see gswa_decode for the layout).

    Row 0: causal attention over the seq_len loop-0 keys. Row r>=1: gate * that + (1 - gate) * attention
    over ring r-1's entries for positions max(0, t-W+1)..t, t = seq_len - 1, entry p at index p % W.
    block_table None means a contiguous cache [B, S_max, G, D] (request b uses block b).
    """
    _check_gqa(q, k_cache)
    ct = _compute_dtype(q)
    b_sz, r_sz, h, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    lens = seq_lens.tolist()
    out = torch.empty(q.shape, dtype=ct, device=q.device)
    for b in range(b_sz):
        n = lens[b]
        kb, vb = request_keys(k_cache, v_cache, block_table, b, n)
        qb = q[b].to(ct).reshape(r_sz, h, d)
        ones = torch.ones(r_sz, n, dtype=torch.bool, device=q.device)
        o = _masked_attention(qb, kb.to(ct), vb.to(ct), ones, scale)
        if r_sz > 1:
            w = ring_k.shape[2]
            t = n - 1
            pos = torch.arange(max(0, t - w + 1), t + 1, device=q.device)
            slot = int(ring_slots[b])
            for r in range(1, r_sz):
                kl = ring_k[slot, r - 1, pos % w].to(ct)
                vl = ring_v[slot, r - 1, pos % w].to(ct)
                ones_l = torch.ones(1, len(pos), dtype=torch.bool, device=q.device)
                o_loc = _masked_attention(qb[r : r + 1], kl, vl, ones_l, scale)[0]
                g = gate[b, r - 1].to(ct)[:, None]
                o[r] = g * o[r] + (1 - g) * o_loc
        out[b] = o
    return out.to(q.dtype)


def gswa_decode_contiguous_reference(q, k_cache, v_cache, seq_lens, ring_k, ring_v, ring_slots, gate, *,
                                     scale=None):
    """gswa_decode_reference over a contiguous (HF static) cache k_cache [B, S_max, G, D]."""
    return gswa_decode_reference(q, k_cache, v_cache, None, seq_lens, ring_k, ring_v, ring_slots, gate,
                                 scale=scale)


def rope_qkv_write_reference(qkv, cos, sin, num_heads, num_kv_heads, head_dim, k_pool, v_pool, pool_index,
                             k_ring=None, v_ring=None, ring_index=None):
    """RoPE of q and k and the K/V writes of a decode step, as separate PyTorch operations.

    qkv [N, (H + 2G) * D] (rows of [q; k; v] heads); cos/sin [C, D] (row n uses row n % C); pool_index [N]
    (int, -1 = no write) into k_pool/v_pool viewed as [-1, G, D]; likewise ring_index into k_ring/v_ring.
    Returns q [N, H, D] with RoPE applied."""
    from ..plt.modeling import rotate_half

    n, h, g, d = qkv.shape[0], num_heads, num_kv_heads, head_dim
    q, k, v = qkv.split([h * d, g * d, g * d], dim=-1)
    rows = torch.arange(n, device=qkv.device) % cos.reshape(-1, d).shape[0]
    c, s = cos.reshape(-1, d)[rows][:, None], sin.reshape(-1, d)[rows][:, None]
    q = q.reshape(n, h, d)
    k = k.reshape(n, g, d)
    q, k = q * c + rotate_half(q) * s, k * c + rotate_half(k) * s
    v = v.reshape(n, g, d)
    for dst_k, dst_v, index in ((k_pool, v_pool, pool_index), (k_ring, v_ring, ring_index)):
        if index is None:
            continue
        keep = index >= 0
        dst_k.view(-1, g, d)[index[keep]] = k[keep]
        dst_v.view(-1, g, d)[index[keep]] = v[keep]
    return q


def add_rms_norm_reference(x, residual, weight, eps):
    """(RMSNorm(x + residual), x + residual) with PLTRMSNorm's roundings; residual None: (RMSNorm(x), x)."""
    h = x if residual is None else x + residual
    hf = h.float()
    return weight * (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype), h


def silu_mul_reference(gate_up):
    """[..., 2n] -> silu(first half) * second half."""
    gate, up = gate_up.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up
