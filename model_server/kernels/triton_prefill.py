"""Triton prefill/extend attention for PLT: causal flash attention (loop 0) and fused G-SWA (loops r>=1).

One program owns BLOCK_M queries of one (sequence, query head). For loop r>=1 it runs two online softmaxes:
first the local band (the loop's own K/V, at most BLOCK_M + window - 1 keys), which it finishes and scales by
(1 - gate); then the causal global pass over loop-0 K/V; the epilogue adds gate * O_glob. The global pass is
split into blocks every row sees whole (no mask) and the diagonal blocks (causal mask), so the mask costs
nothing on most of the work. Programs take query blocks last-first so the longest ones start first.

Semantics and layout: reference.gswa_prefill_reference and docs/kernels.md.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _interpreter_compat
from ._common import _NEG, LOG2E, _scores, _softmax_step
from .reference import LOCAL_WINDOW, _check_gqa

_interpreter_compat.apply()



@triton.jit
def _gswa_prefill_kernel(
    Q, K0, V0, KL, VL, GATE, O,
    CU_Q, CU_K, CU_KL,
    qk_scale, window,
    s_qt, s_qh, s_kt, s_kh, s_vt, s_vh,
    s_klt, s_klh, s_vlt, s_vlh,
    s_gt, s_gh, s_ot, s_oh,
    QPG: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_LOCAL: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    # heavy (late) query blocks first
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start = tl.load(CU_Q + seq)
    q_len = tl.load(CU_Q + seq + 1) - q_start
    if pid_m * BLOCK_M >= q_len:
        return
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    kvh = head // QPG
    q_off = k_len - q_len  # absolute position of this sequence's first query

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < q_len
    pos_m = q_off + offs_m
    p_lo = q_off + pid_m * BLOCK_M
    p_hi = q_off + tl.minimum((pid_m + 1) * BLOCK_M, q_len) - 1

    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(Q + q_rows[:, None] * s_qt + head * s_qh + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)

    if HAS_LOCAL:
        # ---- local band over this loop's own K/V: positions p-window+1..p ----
        kl_start = tl.load(CU_KL + seq)
        kl_len = tl.load(CU_KL + seq + 1) - kl_start
        l_off = k_len - kl_len  # absolute position of local key 0
        j_lo = tl.maximum(p_lo - window + 1 - l_off, 0)
        j_hi = tl.minimum(p_hi + 1 - l_off, kl_len)
        m_l = tl.full([BLOCK_M], _NEG, tl.float32)
        l_l = tl.zeros([BLOCK_M], tl.float32)
        acc_l = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        # pipelined like the global loop: unpipelined (num_stages=1) measured 12-25% slower at 16K-32K on H100
        for j0 in range(j_lo, j_hi, BLOCK_N):
            offs_j = j0 + offs_n
            j_ok = offs_j < j_hi
            kv_rows = (kl_start + offs_j).to(tl.int64)
            k = tl.load(KL + kv_rows[:, None] * s_klt + kvh * s_klh + offs_d[None, :], mask=j_ok[:, None], other=0.0)
            v = tl.load(VL + kv_rows[:, None] * s_vlt + kvh * s_vlh + offs_d[None, :], mask=j_ok[:, None], other=0.0)
            s = _scores(q, k, qk_scale, DOT_F32)
            pos_j = l_off + offs_j
            vis = j_ok[None, :] & (pos_j[None, :] <= pos_m[:, None]) & (pos_j[None, :] > pos_m[:, None] - window)
            s = tl.where(vis, s, float("-inf"))
            m_l, l_l, acc_l = _softmax_step(s, v, m_l, l_l, acc_l, DOT_F32)
        g = tl.load(GATE + q_rows * s_gt + head * s_gh, mask=row_ok, other=0.0).to(tl.float32)
        l_l = tl.where(l_l == 0.0, 1.0, l_l)
        o_loc = acc_l * ((1.0 - g) / l_l)[:, None]

    # ---- global causal pass over loop-0 K/V ----
    m_i = tl.full([BLOCK_M], _NEG, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # blocks below every row's position: no mask needed
    n_full = ((p_lo + 1) // BLOCK_N) * BLOCK_N
    for n0 in range(0, n_full, BLOCK_N):
        kv_rows = (k_start + n0 + offs_n).to(tl.int64)
        k = tl.load(K0 + kv_rows[:, None] * s_kt + kvh * s_kh + offs_d[None, :])
        v = tl.load(V0 + kv_rows[:, None] * s_vt + kvh * s_vh + offs_d[None, :])
        m_i, l_i, acc = _softmax_step(_scores(q, k, qk_scale, DOT_F32), v, m_i, l_i, acc, DOT_F32)
    # diagonal blocks: causal mask
    for n0 in range(n_full, p_hi + 1, BLOCK_N):
        offs_k = n0 + offs_n
        k_ok = offs_k <= p_hi
        kv_rows = (k_start + offs_k).to(tl.int64)
        k = tl.load(K0 + kv_rows[:, None] * s_kt + kvh * s_kh + offs_d[None, :], mask=k_ok[:, None], other=0.0)
        v = tl.load(V0 + kv_rows[:, None] * s_vt + kvh * s_vh + offs_d[None, :], mask=k_ok[:, None], other=0.0)
        s = _scores(q, k, qk_scale, DOT_F32)
        s = tl.where(k_ok[None, :] & (offs_k[None, :] <= pos_m[:, None]), s, float("-inf"))
        m_i, l_i, acc = _softmax_step(s, v, m_i, l_i, acc, DOT_F32)

    if HAS_LOCAL:
        o = acc * (g / l_i)[:, None] + o_loc
    else:
        o = acc / l_i[:, None]
    tl.store(O + q_rows[:, None] * s_ot + head * s_oh + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=row_ok[:, None])


def _prefill_configs():
    cfgs = []
    for bm, bn, w, s in [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 32, 4, 4)]:
        cfgs.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s))
    return cfgs


_gswa_prefill_tuned = triton.autotune(configs=_prefill_configs(), key=["HEAD_DIM", "HAS_LOCAL", "QPG"])(
    _gswa_prefill_kernel
)


def _interpreting() -> bool:
    return triton.knobs.runtime.interpret


def gswa_prefill_triton(q, k0, v0, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                        k_loc=None, v_loc=None, cu_seqlens_kl=None, gate=None, window=LOCAL_WINDOW,
                        scale=None, block_m=None, block_n=None, num_warps=None, num_stages=None):
    """Triton path of gswa_prefill (CUDA, or CPU under TRITON_INTERPRET=1). Same contract as the reference.

    block_m/block_n/num_warps/num_stages pin a launch configuration; left None, CUDA autotunes once per
    (head_dim, local or not, group size) and the interpreter uses small blocks.
    """
    _check_gqa(q, k0)
    nq, h, d = q.shape
    g = k0.shape[1]
    if d not in (16, 32, 64, 128, 256):
        raise ValueError(f"head_dim {d} not supported (16, 32, 64, 128, 256)")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype {q.dtype} not supported")
    has_local = k_loc is not None
    if has_local and (v_loc is None or cu_seqlens_kl is None or gate is None):
        raise ValueError("local branch needs v_loc, cu_seqlens_kl and gate")
    for t in (q, k0, v0) + ((k_loc, v_loc) if has_local else ()):
        if t.stride(-1) != 1:
            raise ValueError("last dim of q/k/v must be contiguous")
    scale = d ** -0.5 if scale is None else scale
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    batch = cu_seqlens_q.numel() - 1
    if nq == 0 or batch == 0:
        return o
    kl, vl, cukl, gt = (k_loc, v_loc, cu_seqlens_kl, gate) if has_local else (k0, v0, cu_seqlens_k, q)
    gate_strides = (gt.stride(0), gt.stride(1)) if has_local else (0, 0)
    args = (q, k0, v0, kl, vl, gt, o, cu_seqlens_q, cu_seqlens_k, cukl, scale * LOG2E, int(window),
            q.stride(0), q.stride(1), k0.stride(0), k0.stride(1), v0.stride(0), v0.stride(1),
            kl.stride(0), kl.stride(1), vl.stride(0), vl.stride(1), *gate_strides, o.stride(0), o.stride(1))
    interp = _interpreting() or not q.is_cuda
    dot_f32 = interp and q.dtype == torch.bfloat16  # the interpreter multiplies raw bf16 bits in tl.dot
    pinned = block_m is not None or interp
    if pinned:
        bm = block_m or 16
        bn = block_n or 16
        grid = (triton.cdiv(max_seqlen_q, bm), batch, h)
        kw = {} if interp else {"num_warps": num_warps or 4, "num_stages": num_stages or 2}
        _gswa_prefill_kernel[grid](*args, QPG=h // g, HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, HAS_LOCAL=has_local,
                                   DOT_F32=dot_f32, **kw)
    else:
        grid = lambda meta: (triton.cdiv(max_seqlen_q, meta["BLOCK_M"]), batch, h)  # noqa: E731
        _gswa_prefill_tuned[grid](*args, QPG=h // g, HEAD_DIM=d, HAS_LOCAL=has_local, DOT_F32=False)
    return o


def flops_causal(lens_q, lens_k, heads: int, head_dim: int) -> float:
    """Matmul FLOPs of causal attention (right-aligned queries), the usual 4 * visible pairs * H * D."""
    total = 0
    for lq, lk in zip(lens_q, lens_k):
        total += lq * (lk - lq) + lq * (lq + 1) // 2
    return 4.0 * total * heads * head_dim


__all__ = ["gswa_prefill_triton", "flops_causal"]
