"""One decode-step launch per layer for RoPE and the K/V writes (docs/kernels.md, "rope_qkv_write").

Replaces, per layer of a decode step, RoPE of q and k (rotate_half: a negation, a cat, two products and a
sum, each its own kernel, for each of q and k), the repeat of cos/sin over the loop rows and the
index_put writes of K/V into the paged loop-0 pool and into the rings: one program per (row, head).
The roundings are meant to be torch's (x*cos and rotate_half(x)*sin each rounded to the input dtype before
the sum); in float32 the output equals ``apply_rope`` bit for bit, in bf16/fp16 on the H200 a few elements
differ by one rounding step (tests/kernels/test_gswa_gpu.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _interpreter_compat

_interpreter_compat.apply()


@triton.jit
def _rope_qkv_write_kernel(qkv_ptr, stride_qkv, cos_ptr, sin_ptr, stride_cs, cs_rows, q_ptr,
                           kp_ptr, vp_ptr, pidx_ptr, kr_ptr, vr_ptr, ridx_ptr,
                           H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, HAS_RING: tl.constexpr):
    n = tl.program_id(0)
    head = tl.program_id(1)  # 0..H-1: query heads; H..H+G-1: key/value heads
    half: tl.constexpr = D // 2
    d = tl.arange(0, D)
    first = d < half
    partner = tl.where(first, d + half, d - half)
    dt = qkv_ptr.dtype.element_ty
    cs = (n % cs_rows).to(tl.int64) * stride_cs
    c = tl.load(cos_ptr + cs + d)
    s = tl.load(sin_ptr + cs + d)
    row = qkv_ptr + n.to(tl.int64) * stride_qkv + head * D
    x = tl.load(row + d)
    xp = tl.load(row + partner).to(tl.float32)  # negated in float32: exact, and the interpreter's bf16 is bits
    xp = tl.where(first, -xp, xp)
    a = (x.to(tl.float32) * c.to(tl.float32)).to(dt)
    b = (xp * s.to(tl.float32)).to(dt)
    out = (a.to(tl.float32) + b.to(tl.float32)).to(dt)
    if head < H:
        tl.store(q_ptr + (n.to(tl.int64) * H + head) * D + d, out)
    else:
        g = head - H
        v = tl.load(row + G * D + d)  # v of head g sits G heads after k of head g
        pidx = tl.load(pidx_ptr + n).to(tl.int64)
        if pidx >= 0:
            tl.store(kp_ptr + (pidx * G + g) * D + d, out)
            tl.store(vp_ptr + (pidx * G + g) * D + d, v)
        if HAS_RING:
            ridx = tl.load(ridx_ptr + n).to(tl.int64)
            if ridx >= 0:
                tl.store(kr_ptr + (ridx * G + g) * D + d, out)
                tl.store(vr_ptr + (ridx * G + g) * D + d, v)


def rope_qkv_write_triton(qkv, cos, sin, num_heads, num_kv_heads, head_dim, k_pool, v_pool, pool_index,
                          k_ring=None, v_ring=None, ring_index=None):
    n = qkv.shape[0]
    h, g, d = num_heads, num_kv_heads, head_dim
    assert qkv.shape[1] == (h + 2 * g) * d and qkv.stride(1) == 1, qkv.shape
    assert d % 2 == 0 and d & (d - 1) == 0, "head_dim must be a power of two"
    cos, sin = cos.reshape(-1, d), sin.reshape(-1, d)
    assert cos.stride(1) == 1 and sin.stride() == cos.stride()
    for t in (k_pool, v_pool) + ((k_ring, v_ring) if ring_index is not None else ()):
        assert t.is_contiguous() and t.dtype == qkv.dtype and t.shape[-2:] == (g, d)
    q = torch.empty((n, h, d), dtype=qkv.dtype, device=qkv.device)
    has_ring = ring_index is not None
    _rope_qkv_write_kernel[(n, h + g)](
        qkv, qkv.stride(0), cos, sin, cos.stride(0), cos.shape[0], q,
        k_pool, v_pool, pool_index, k_ring if has_ring else k_pool, v_ring if has_ring else v_pool,
        ring_index if has_ring else pool_index, H=h, G=g, D=d, HAS_RING=has_ring, num_warps=1)
    return q
