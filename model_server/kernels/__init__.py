"""PLT attention kernels: fused gated sliding-window attention (G-SWA) for prefill and decode.

Public entry points pick the Triton kernels for CUDA tensors and PyTorch otherwise, so the model calls one
name on every device: off CUDA, the attention runs the SDPA-based `gswa_prefill_cpu` / `gswa_decode_cpu`
(cpu.py), the rest the references. `*_triton` force the kernels (on CPU only under TRITON_INTERPRET=1, set
before triton is first imported); `*_reference` force the references. Contract and tolerances: docs/kernels.md.
"""

from __future__ import annotations

from .cpu import gswa_decode_cpu, gswa_prefill_cpu
from .reference import (
    LOCAL_WINDOW,
    add_rms_norm_reference,
    silu_mul_reference,
    gswa_decode_contiguous_reference,
    gswa_decode_reference,
    gswa_prefill_reference,
    rope_qkv_write_reference,
)


def gswa_prefill(q, k0, v0, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, k_loc=None, v_loc=None,
                 cu_seqlens_kl=None, gate=None, window=LOCAL_WINDOW, scale=None):
    """Packed varlen causal attention (loop 0) or G-SWA (loop r>=1: pass k_loc, v_loc, cu_seqlens_kl, gate).

    q [Nq, H, D]; k0/v0 [Nk, G, D]; queries right-aligned to the end of their sequence's keys.
    o = gate * O_glob + (1 - gate) * O_loc per query head. Output dtype = q dtype.
    """
    kw = dict(k_loc=k_loc, v_loc=v_loc, cu_seqlens_kl=cu_seqlens_kl, gate=gate, window=window, scale=scale)
    if q.is_cuda:
        from .triton_prefill import gswa_prefill_triton

        return gswa_prefill_triton(q, k0, v0, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kw)
    return gswa_prefill_cpu(q, k0, v0, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kw)


def gswa_decode(q, k_cache, v_cache, block_table, seq_lens, ring_k, ring_v, ring_slots, gate, *, scale=None):
    """One decode step for all R loop rows: q [B, R, H, D] over a paged loop-0 cache plus per-loop rings.

    block_table None means contiguous caches [B, S_max, G, D]. seq_lens include the current token, whose
    loop-0 K/V and ring entries are already written. R=1: ring_*, ring_slots and gate may be None.
    """
    if q.is_cuda:
        from .triton_decode import gswa_decode_triton

        return gswa_decode_triton(q, k_cache, v_cache, block_table, seq_lens, ring_k, ring_v, ring_slots, gate,
                                  scale=scale)
    return gswa_decode_cpu(q, k_cache, v_cache, block_table, seq_lens, ring_k, ring_v, ring_slots, gate, scale=scale)


def gswa_decode_contiguous(q, k_cache, v_cache, seq_lens, ring_k, ring_v, ring_slots, gate, *, scale=None):
    """gswa_decode over a contiguous (HF static) cache [B, S_max, G, D]; any strides, e.g. a transposed view."""
    return gswa_decode(q, k_cache, v_cache, None, seq_lens, ring_k, ring_v, ring_slots, gate, scale=scale)


def rope_qkv_write(qkv, cos, sin, num_heads, num_kv_heads, head_dim, k_pool, v_pool, pool_index,
                   k_ring=None, v_ring=None, ring_index=None):
    """RoPE of q and k for decode rows and the K/V writes into the paged pool and the rings, one launch.

    qkv [N, (H + 2G) * D]; cos/sin [C, D] (row n uses row n % C, so loop rows share their token's);
    pool_index / ring_index [N] int64, -1 = this row writes nowhere there. Returns q [N, H, D]."""
    args = (qkv, cos, sin, num_heads, num_kv_heads, head_dim, k_pool, v_pool, pool_index, k_ring, v_ring,
            ring_index)
    if qkv.is_cuda:
        from .triton_rope import rope_qkv_write_triton

        return rope_qkv_write_triton(*args)
    return rope_qkv_write_reference(*args)


def add_rms_norm(x, residual, weight, eps):
    """(RMSNorm(x + residual), x + residual) over the last dim, one launch on CUDA; residual may be None."""
    if x.is_cuda:
        from .triton_norm import add_rms_norm_triton

        return add_rms_norm_triton(x, residual, weight, eps)
    return add_rms_norm_reference(x, residual, weight, eps)


def silu_mul(gate_up):
    """[..., 2n] -> silu(gate_up[..., :n]) * gate_up[..., n:], one launch on CUDA."""
    if gate_up.is_cuda:
        from .triton_norm import silu_mul_triton

        return silu_mul_triton(gate_up)
    return silu_mul_reference(gate_up)


def __getattr__(name):  # lazy: importing the package must not import triton (CPU-only callers)
    if name in ("gswa_prefill_triton",):
        from . import triton_prefill

        return triton_prefill.gswa_prefill_triton
    if name in ("add_rms_norm_triton", "silu_mul_triton"):
        from . import triton_norm

        return getattr(triton_norm, name)
    if name == "rope_qkv_write_triton":
        from . import triton_rope

        return triton_rope.rope_qkv_write_triton
    if name in ("gswa_decode_triton", "gswa_decode_contiguous_triton"):
        from . import triton_decode

        return getattr(triton_decode, name)
    raise AttributeError(name)


__all__ = [
    "LOCAL_WINDOW",
    "gswa_prefill",
    "gswa_prefill_cpu",
    "gswa_prefill_reference",
    "gswa_prefill_triton",
    "gswa_decode",
    "gswa_decode_cpu",
    "gswa_decode_reference",
    "gswa_decode_triton",
    "gswa_decode_contiguous",
    "gswa_decode_contiguous_reference",
    "gswa_decode_contiguous_triton",
    "add_rms_norm",
    "add_rms_norm_reference",
    "add_rms_norm_triton",
    "silu_mul",
    "silu_mul_reference",
    "silu_mul_triton",
    "rope_qkv_write",
    "rope_qkv_write_reference",
    "rope_qkv_write_triton",
]
