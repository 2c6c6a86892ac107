"""Pieces both PLT attention kernels share: constants and the online-softmax step."""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
_NEG = tl.constexpr(-1.0e30)  # finite "minus infinity" for running maxima: exp2(m_old - m_new) stays finite


@triton.jit
def _scores(q, k, qk_scale, DOT_F32: tl.constexpr):
    """Scaled scores of a query tile against a key tile (base 2: qk_scale includes log2 e)."""
    if DOT_F32:
        k = k.to(tl.float32)
    return tl.dot(q, tl.trans(k)) * qk_scale


@triton.jit
def _softmax_step(s, v, m_i, l_i, acc, DOT_F32: tl.constexpr):
    """Fold one tile of (already masked) scores and its values into the running max, sum and output."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    p = p.to(v.dtype)
    if DOT_F32:
        p = p.to(tl.float32)
        v = v.to(tl.float32)
    acc = acc * alpha[:, None] + tl.dot(p, v)
    return m_new, l_i, acc


@triton.jit
def _online_update(q, k, v, s_mask, m_i, l_i, acc, qk_scale, DOT_F32: tl.constexpr):
    """One key tile of a flash-attention online softmax, masked with s_mask (True = visible)."""
    s = tl.where(s_mask, _scores(q, k, qk_scale, DOT_F32), float("-inf"))
    return _softmax_step(s, v, m_i, l_i, acc, DOT_F32)
