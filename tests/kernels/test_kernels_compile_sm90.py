"""The Triton kernels compile for an H100 (sm_90) on a machine without a GPU.

The interpreter tests check what the kernels compute, but not that the real compiler accepts them; this
compiles both kernels ahead of time for CUDA 9.0 (the device machine's GPU) down to a cubin. The compile
runs in a fresh process: this folder's conftest switches Triton to its interpreter, which cannot compile.
"""
import os
import re
import subprocess
import sys

import pytest

VARIANTS = {
    "prefill-gswa": ("prefill", dict(QPG=5, HEAD_DIM=128, BLOCK_M=128, BLOCK_N=64, HAS_LOCAL=True, DOT_F32=False), 8),
    "prefill-loop0": ("prefill", dict(QPG=5, HEAD_DIM=128, BLOCK_M=128, BLOCK_N=64, HAS_LOCAL=False, DOT_F32=False),
                      8),
    # triton_decode's two launch configurations: NARROW_CFG (64-key tiles, 3 stages), WIDE_CFG (32, 4)
    "decode-r2": ("decode", dict(R=2, QPG=5, HEAD_DIM=128, BLOCK_M=16, BLOCK_N=64, BLOCK_L=16, PAGED=True,
                                 HAS_LOCAL=True, SPLIT=True, DOT_F32=False), 4),
    "decode-r1": ("decode", dict(R=1, QPG=5, HEAD_DIM=128, BLOCK_M=16, BLOCK_N=64, BLOCK_L=16, PAGED=True,
                                 HAS_LOCAL=False, SPLIT=True, DOT_F32=False), 4),
    "decode-r2-wide": ("decode", dict(R=2, QPG=5, HEAD_DIM=128, BLOCK_M=16, BLOCK_N=32, BLOCK_L=16, PAGED=True,
                                      HAS_LOCAL=True, SPLIT=False, DOT_F32=False), 4),
}
DECODE_STAGES = {64: 3, 32: 4}  # by BLOCK_N, as triton_decode.NARROW_CFG / WIDE_CFG


def compile_for_sm90(variant: str) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from loopcoder.model_server.kernels.triton_decode import _gswa_decode_kernel
    from loopcoder.model_server.kernels.triton_prefill import _gswa_prefill_kernel

    which, constexprs, warps = VARIANTS[variant]
    kernel = _gswa_prefill_kernel if which == "prefill" else _gswa_decode_kernel
    kinds = {**dict.fromkeys(["Q", "K0", "V0", "KL", "VL", "GATE", "O", "KC", "VC", "RK", "RV"], "*bf16"),
             **dict.fromkeys(["CU_Q", "CU_K", "CU_KL", "BT", "SEQ", "SLOTS", "CNT"], "*i32"),
             **dict.fromkeys(["WS_ACC", "WS_ML"], "*fp32"), "qk_scale": "fp32"}
    sig = {n: "constexpr" if n in constexprs else kinds.get(n, "i32") for n in kernel.arg_names}
    # what a real launch specialises: pointers and most integers (strides, page size) divisible by 16
    odd = {"qk_scale", "window", "num_kv_heads", "num_splits", "min_tiles", "max_seqlen_q", "max_seqlen_k"}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
             if n not in constexprs and n not in odd}
    stages = DECODE_STAGES[constexprs["BLOCK_N"]] if which == "decode" else 3
    compiled = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    assert ".target sm_90" in compiled.asm["ptx"]
    assert len(compiled.asm["cubin"]) > 10_000
    if which == "decode":
        # the loop-0 K/V loop keeps num_stages - 1 tiles in flight: that many shared-memory buffers for K (and
        # V); a load feeding the K/V address in the same iteration would collapse this to 1 (docs/kernels.md)
        tile = f"x{constexprs['BLOCK_N']}x{constexprs['HEAD_DIM']}xbf16"
        bufs = {int(n) for n in re.findall(r"memdesc<(\d+)" + tile, compiled.asm["ttgir"])}
        assert bufs == {stages - 1}, bufs
    print(f"{variant}: {len(compiled.asm['cubin'])} bytes of sm_90 cubin")


def test_decode_variants_are_the_launch_configurations():
    pytest.importorskip("triton")
    from loopcoder.model_server.kernels import triton_decode

    assert DECODE_STAGES == dict([triton_decode.NARROW_CFG, triton_decode.WIDE_CFG])


@pytest.mark.parametrize("variant", VARIANTS)
def test_kernel_compiles_for_sm90(variant):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, __file__, variant], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


if __name__ == "__main__":
    compile_for_sm90(sys.argv[1])
