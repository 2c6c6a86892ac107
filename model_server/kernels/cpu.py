"""CPU path of the PLT attention: the maths of the references (reference.py) through PyTorch's fused SDPA.

Prefill (`gswa_prefill_cpu`): the reference scores every query against every key of its sequence in both
branches, as full [H, M, N] tensors (the local branch then masks a `window`-wide band out of them). Here:
- global branch: one `scaled_dot_product_attention` call per sequence (PyTorch's fused CPU flash kernel;
  `is_causal=True` for a prompt, an explicit bottom-right-aligned causal mask for an extend chunk);
- local branch: the queries of all sequences are cut into blocks of `block` rows; each block is scored only
  against the `block + window - 1` local keys that end at its last row, with a band mask, and all blocks of
  all sequences go through one batched SDPA call. Cost per query: block + window - 1 scores instead of len_k.
Decode (`gswa_decode_cpu`): one SDPA call per request for all R rows over its loop-0 keys and one for the
ring rows, the query heads of a KV head folded into query rows (no mask in decode), instead of the
reference's expanded K/V and einsums.
Same conventions as the references (module docstring of reference.py): float32 compute (float64 for float64
inputs), output in q's dtype, query head h reads KV head h // (H / G), a query with no local key gets a zero
local output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import LOCAL_WINDOW, _check_gqa, _compute_dtype, request_keys

LOCAL_BLOCK = 64  # query rows per local block (benchmarks/cpu_attention.py --blocks compares 32..256)


def _sdpa(q, k, v, scale, mask=None, causal=False):
    """q [B, M, H, D], k/v [B, N, G, D] (token-major, as packed) -> [B, M, H, D]. Strided views are fine;
    inputs must be 4-D: with 3-D ones SDPA falls back to its unfused maths path (6x slower, measured)."""
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=True)
    return o.transpose(1, 2)


def _global(q, k, v, scale):
    """Causal attention of lq queries right-aligned to the end of lk keys: q [lq, H, D], k/v [lk, G, D]."""
    lq, lk = q.shape[0], k.shape[0]
    if lq == lk:
        return _sdpa(q[None], k[None], v[None], scale, causal=True)[0]
    # SDPA's is_causal aligns the diagonal top-left; an extend chunk needs it bottom-right: query i (absolute
    # position lk - lq + i) sees keys 0 .. lk - lq + i.
    mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
    return _sdpa(q[None], k[None], v[None], scale, mask=mask)[0]


def _local_blocks(cq, ckl, window, block, device):
    """Index plan of the batched local branch.

    Per sequence, in local coordinates (local key j at index j of its ll keys, which end where the queries
    end): query i sits at c = i + ll - lq and sees the keys j with c - window < j <= c, 0 <= j < ll. Queries
    with c < 0 see none (they come before the first local key) and are left out: their O_loc is zero.
    A block of queries c0 .. c0 + block - 1 reads keys c0 - window + 1 .. c0 + block - 1 (block + window - 1
    of them); query row r of the block sees key column t iff r <= t <= r + window - 1 (the same band in every
    block), and only columns holding a real key (0 <= j < ll) count.

    Returns q_rows [nb, block] (packed query row, -1 = padding), k_rows [nb, block + window - 1] (packed
    local-key row, -1 = none) and mask [nb, 1, block, block + window - 1]; None when no query has a key.
    """
    q_rows, k_rows = [], []
    for i in range(len(cq) - 1):
        qs, lq, ls, ll = cq[i], cq[i + 1] - cq[i], ckl[i], ckl[i + 1] - ckl[i]
        c_first = max(0, ll - lq)  # first query with a local key (c >= 0)
        if lq == 0 or c_first > ll - 1:
            continue
        c0 = torch.arange(c_first, ll, block, device=device)  # block starts
        c = c0[:, None] + torch.arange(block, device=device)  # [nb_i, block]
        q_rows.append(torch.where(c < ll, qs + c - (ll - lq), -1))
        j = c0[:, None] + torch.arange(-window + 1, block, device=device)  # [nb_i, block + window - 1]
        k_rows.append(torch.where((j >= 0) & (j < ll), ls + j, -1))
    if not q_rows:
        return None
    q_rows, k_rows = torch.cat(q_rows), torch.cat(k_rows)
    r = torch.arange(block, device=device)[:, None]
    t = torch.arange(block + window - 1, device=device)[None, :]
    band = (t >= r) & (t <= r + window - 1)
    # padding query rows (past a sequence's end) keep their band: they are never read back
    mask = band[None] & (k_rows >= 0)[:, None, :]
    return q_rows, k_rows, mask[:, None]


def _local(q, k_loc, v_loc, cq, ckl, window, scale, block):
    """O_loc [Nq, H, D] of all sequences at once (zero rows for queries without a local key)."""
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    # a window longer than every local key set sees all of them: cap it so the blocks stay that short
    window = min(window, max((b - a for a, b in zip(ckl, ckl[1:])), default=0))
    plan = _local_blocks(cq, ckl, window, block, q.device) if window >= 1 else None
    if plan is None:
        return out
    q_rows, k_rows, mask = plan

    def gather(x, rows):  # rows -1 read an appended zero row
        padded = torch.cat([x, x.new_zeros(1, *x.shape[1:])])
        return padded[rows]  # [nb, n, heads, D]

    o = _sdpa(gather(q, q_rows), gather(k_loc, k_rows), gather(v_loc, k_rows), scale, mask=mask)
    keep = q_rows >= 0
    out[q_rows[keep]] = o[keep]
    return out


def gswa_prefill_cpu(q, k0, v0, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, k_loc=None,
                     v_loc=None, cu_seqlens_kl=None, gate=None, window=LOCAL_WINDOW, scale=None,
                     block=LOCAL_BLOCK):
    """`gswa_prefill_reference` (same arguments and result) computed with SDPA: see the module docstring.

    `block`: query rows per local block (a speed knob; any value >= 1 gives the same result)."""
    _check_gqa(q, k0)
    ct = _compute_dtype(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if k_loc is not None and (gate is None or cu_seqlens_kl is None):
        raise ValueError("local branch needs gate and cu_seqlens_kl")
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    qc = q.to(ct)
    out = torch.empty(q.shape, dtype=ct, device=q.device)
    for i in range(len(cq) - 1):
        qs, qe, ks, ke = cq[i], cq[i + 1], ck[i], ck[i + 1]
        if qe == qs:
            continue
        if qe - qs > ke - ks:
            raise ValueError(f"sequence {i}: {qe - qs} queries but only {ke - ks} keys")
        out[qs:qe] = _global(qc[qs:qe], k0[ks:ke].to(ct), v0[ks:ke].to(ct), scale)
    if k_loc is not None:
        o_loc = _local(qc, k_loc.to(ct), v_loc.to(ct), cq, cu_seqlens_kl.tolist(), window, scale, block)
        g = gate.to(ct)[:, :, None]
        out = g * out + (1 - g) * o_loc
    return out.to(q.dtype)


def _grouped(q, k, v, scale):
    """Unmasked attention of q [B, M, H, D] over k/v [B, N, G, D] with the H / G query heads of a KV head
    folded into its query rows ([B, G, M * H / G, D] for SDPA): without a mask, rows and heads are alike, and
    SDPA reads each KV head once instead of expanding it (measured 2-3x faster than enable_gqa at M = 2)."""
    b, m, h, d = q.shape
    g = k.shape[2]
    qg = q.reshape(b, m, g, h // g, d).permute(0, 2, 1, 3, 4).reshape(b, g, m * (h // g), d)
    o = F.scaled_dot_product_attention(qg, k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return o.reshape(b, g, m, h // g, d).permute(0, 2, 1, 3, 4).reshape(b, m, h, d)


def gswa_decode_cpu(q, k_cache, v_cache, block_table, seq_lens, ring_k, ring_v, ring_slots, gate, *,
                    scale=None):
    """`gswa_decode_reference` (same arguments and result) with SDPA. Per request: one call for all R rows
    over the loop-0 keys (every row sees all of them: no mask) and one for rows 1..R-1 over their rings."""
    _check_gqa(q, k_cache)
    ct = _compute_dtype(q)
    b_sz, r_sz, h, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    lens = seq_lens.tolist()
    slots = ring_slots.tolist() if r_sz > 1 else None
    qc = q.to(ct)
    out = torch.empty(q.shape, dtype=ct, device=q.device)
    for b in range(b_sz):
        n = lens[b]
        kb, vb = request_keys(k_cache, v_cache, block_table, b, n)
        o = _grouped(qc[b][None], kb.to(ct)[None], vb.to(ct)[None], scale)[0]  # [R, H, D]
        if r_sz > 1:
            # ring entries of positions max(0, t-W+1)..t (t = n - 1), position p at index p % W; a softmax
            # without a mask does not depend on their order
            w = ring_k.shape[2]
            idx = torch.arange(max(0, n - w), n, device=q.device) % w
            kl = ring_k[slots[b]].index_select(1, idx).to(ct)  # [R-1, n_l, G, D]
            vl = ring_v[slots[b]].index_select(1, idx).to(ct)
            o_loc = _grouped(qc[b, 1:, None], kl, vl, scale)[:, 0]  # rows 1..R-1 as the batch
            g = gate[b].to(ct)[:, :, None]  # [R-1, H, 1]
            o[1:] = g * o[1:] + (1 - g) * o_loc
        out[b] = o
    return out.to(q.dtype)
