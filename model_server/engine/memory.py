"""How big the caches are: the context default, the loop-0 KV pool from free GPU memory, the recompute tail.

On CUDA the pool is sized as vLLM does it (``gpu_memory_utilization``): load the weights, allocate the
fixed per-request pools (rings, carry) and a small KV pool, run the largest prefill and decode the
engine will run, and give the KV pool what is left of ``utilization x total`` after the peak memory
that run reached (weights, pools, activations, allocator caches) and the memory outside PyTorch (CUDA
context, cuBLAS workspaces, other processes). The pure arithmetic is in functions of their own so it
is tested on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

GiB = 1024 ** 3


class CacheSizingError(ValueError):
    """The configured memory cannot hold the engine (one line, for the CLI)."""


def default_max_model_len(device: str, max_position_embeddings: int | None) -> int:
    """The context when none is set: the checkpoint's own on a GPU; at most 4,096 on CPU (tests, demo)."""
    trained = int(max_position_embeddings or 4096)
    return trained if device == "cuda" else min(4096, trained)


def kv_block_bytes(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Loop-0 K and V of one block in every layer."""
    return 2 * num_layers * block_size * num_kv_heads * head_dim * dtype_bytes


def slot_bytes(num_layers: int, num_loops: int, window: int, num_kv_heads: int, head_dim: int, hidden: int,
               dtype_bytes: int) -> int:
    """One request slot: the rings of loops >= 1 (K and V, every layer) and the CLP carry."""
    rings = num_loops - 1
    return (2 * num_layers * rings * window * num_kv_heads * head_dim + rings * hidden) * dtype_bytes


def prefill_gather_bytes(context: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """The prefill gathers one layer's loop-0 K and V of a step's whole context (at most max_model_len
    tokens per step, scheduler.py) before the attention kernel: transient, one layer at a time."""
    return 2 * context * num_kv_heads * head_dim * dtype_bytes


@dataclass
class MemoryPlan:
    total_bytes: int
    utilization: float
    non_torch_bytes: int  # CUDA context, library workspaces, other processes
    peak_bytes: int  # PyTorch's peak during the profile run (weights, fixed pools, activations)
    extra_activation_bytes: int  # what the profile run could not reach (a longer context's gather)
    block_bytes: int
    num_blocks: int
    snapshot_bytes: int = 0  # loop-state snapshots at their capacity (loop_state.py), allocated while serving

    @property
    def kv_bytes(self) -> int:
        return self.num_blocks * self.block_bytes

    def summary(self) -> str:
        return (f"KV pool {self.num_blocks} blocks = {self.kv_bytes / GiB:.2f} GiB: {self.utilization:.2f} x "
                f"{self.total_bytes / GiB:.1f} GiB less {self.peak_bytes / GiB:.2f} GiB peak (weights, "
                f"slots, activations), {self.extra_activation_bytes / GiB:.2f} GiB long-context gather and "
                f"{self.non_torch_bytes / GiB:.2f} GiB outside PyTorch"
                + (f", {self.snapshot_bytes / GiB:.2f} GiB loop-state snapshots" if self.snapshot_bytes else ""))


def plan_kv_blocks(total_bytes: int, utilization: float, non_torch_bytes: int, peak_bytes: int,
                   extra_activation_bytes: int, block_bytes: int, min_blocks: int,
                   snapshot_bytes: int = 0) -> MemoryPlan:
    """Blocks that fit ``utilization x total`` after everything else; CacheSizingError below ``min_blocks``."""
    budget = int(total_bytes * utilization) - non_torch_bytes - peak_bytes - extra_activation_bytes - snapshot_bytes
    num_blocks = max(0, budget // block_bytes)
    plan = MemoryPlan(total_bytes, utilization, non_torch_bytes, peak_bytes, extra_activation_bytes, block_bytes,
                      num_blocks, snapshot_bytes)
    if num_blocks < min_blocks:
        raise CacheSizingError(
            f"gpu_memory_utilization {utilization} leaves room for {num_blocks} KV blocks but one request of "
            f"max_model_len needs {min_blocks} ({plan.summary()}); raise --gpu-memory-utilization or lower "
            f"--max-model-len / --max-batch")
    return plan


def recompute_tail(num_loops: int, num_layers: int, window: int, clp: bool = True) -> int:
    """Positions of a prefix-cache hit run again to rebuild the rings and the carry (scheduler.py).

    Loop r's layer-l state at position p depends on its layer-0 inputs over [p - l(w-1), p] (w keys in
    the local window, the current one included; the global branch reads only cached loop-0 K/V). At the
    end h of a hit the last loop needs its rings (w-1 entries per layer) right: correct inputs over the
    last L(w-1) positions. A loop below it must also hand over its outputs one position earlier (CLP:
    loop r's input at q is loop r-1's output at q-1), the carry H_{h-1} included, so it needs
    L(w-1) + 1 more positions; IQuest v1 (no shift, no carry) L(w-1). Loop 0 is exact wherever it runs
    (it reads cached loop-0 K/V only), so the tail is (R-1)(L(w-1)+1) for PLT, (R-1)L(w-1) for v1.
    tests/engine/test_engine_prefix_cache.py shows one position less changes the logits.
    """
    if num_loops <= 1:
        return 0
    return (num_loops - 1) * (num_layers * (window - 1) + (1 if clp else 0))


def keep_freed_cpu_memory() -> bool:
    """On CPU, let glibc keep the memory the engine frees instead of handing it back to the kernel.

    glibc serves big blocks with mmap and unmaps them on free, so a tensor of the same size allocated again
    faults fresh zeroed pages in. Measured when the CPU attention was the reference (per-layer score tensors
    of up to 115 MB for a 1,790-token prompt) on LoopCoder-Nano (1,500-token prompt, 8 tokens, one thread,
    loaded 2-core machine): 3.09M minor faults, 11.3 s of system time beside 18.6 s of user time, 62 s wall;
    with big blocks from the heap and no trimming (what this sets) 0.21M faults, 1.9 s system, 42 s wall.
    Not measured again since the SDPA path (kernels/cpu.py) stopped materialising the scores; the MLP and
    logits activations of a long prefill are still blocks of many MB. Process-wide and idempotent; False
    where the C library has no mallopt (not glibc).
    """
    import ctypes

    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2 ** 31 - 1))
