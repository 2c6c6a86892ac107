"""Small fused kernels of a decode step's layer (docs/kernels.md): residual add + RMSNorm, and SiLU(gate) * up.

At decode the rows are few (B * R) and every separate elementwise kernel costs a launch of a few
microseconds inside the CUDA graph; torch's own rms_norm kernel measured ~7 us for one 5,120-wide row
on the H200. ``add_rms_norm`` computes h = x + residual (rounded to the dtype, like torch's add) and
weight * (h * rsqrt(mean(h^2) + eps)).to(dtype) (PLTRMSNorm's roundings) in one program per row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _interpreter_compat

_interpreter_compat.apply()


@triton.jit
def _add_rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, h_ptr, n_cols, eps,
                         HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < n_cols
    dt = x_ptr.dtype.element_ty
    h = tl.load(x_ptr + row * n_cols + offs, mask=ok, other=0.0)
    if HAS_RES:
        r = tl.load(res_ptr + row * n_cols + offs, mask=ok, other=0.0)
        h = (h.to(tl.float32) + r.to(tl.float32)).to(dt)
        tl.store(h_ptr + row * n_cols + offs, h, mask=ok)
    hf = h.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(hf * hf, 0) / n_cols + eps)
    y = (hf * rstd).to(dt)
    w = tl.load(w_ptr + offs, mask=ok, other=0.0)
    tl.store(out_ptr + row * n_cols + offs, (w.to(tl.float32) * y.to(tl.float32)).to(dt), mask=ok)


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n_cols
    dt = gu_ptr.dtype.element_ty
    g = tl.load(gu_ptr + row * 2 * n_cols + offs, mask=ok, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * 2 * n_cols + n_cols + offs, mask=ok, other=0.0)
    s = (g / (1.0 + tl.exp(-g))).to(dt)  # F.silu rounds its output, then the product is rounded again
    tl.store(out_ptr + row * n_cols + offs, (s.to(tl.float32) * u.to(tl.float32)).to(dt), mask=ok)


def add_rms_norm_triton(x, residual, weight, eps):
    """(norm(x + residual), x + residual) over the last dim; residual None: (norm(x), x)."""
    d = x.shape[-1]
    x2 = x.reshape(-1, d)
    assert x2.is_contiguous() and weight.is_contiguous() and weight.dtype == x.dtype
    out = torch.empty_like(x2)
    if residual is None:
        h = x2
    else:
        res = residual.reshape(-1, d)
        assert res.is_contiguous() and res.dtype == x.dtype
        h = torch.empty_like(x2)
    block = triton.next_power_of_2(d)
    _add_rms_norm_kernel[(x2.shape[0],)](x2, x2 if residual is None else res, weight, out, h, d, eps,
                                         HAS_RES=residual is not None, BLOCK=block,
                                         num_warps=min(16, max(1, block // 512)))
    return out.view(x.shape), h.view(x.shape)


def silu_mul_triton(gate_up):
    """[..., 2n] -> silu(gate_up[..., :n]) * gate_up[..., n:]"""
    n = gate_up.shape[-1] // 2
    gu = gate_up.reshape(-1, 2 * n)
    assert gu.is_contiguous()
    out = torch.empty((gu.shape[0], n), dtype=gu.dtype, device=gu.device)
    block = 1024
    _silu_mul_kernel[(gu.shape[0], triton.cdiv(n, block))](gu, out, n, BLOCK=block, num_warps=4)
    return out.view(*gate_up.shape[:-1], n)
