"""Engine settings (configs/serve.yaml's `engine` section feeds these)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    """How the native engine loads the model and sizes its batches and caches."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(..., description="checkpoint directory")
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    num_loops: int | None = Field(None, ge=1, description="loops per token; default the trained count")
    max_num_seqs: int = Field(32, ge=1, description="requests decoded together (running batch)")
    max_num_batched_tokens: int = Field(2048, ge=16, description="prompt tokens per prefill step (chunking)")
    max_model_len: int | None = Field(
        None, ge=16, description="prompt + output tokens per request; default: the checkpoint's "
        "max_position_embeddings on cuda, min(4096, that) on cpu")
    max_waiting: int = Field(256, ge=0, description="queued requests before new ones are refused")
    block_size: int = Field(16, ge=1, description="tokens per loop-0 KV block")
    num_kv_blocks: int | None = Field(
        None, ge=1, description="loop-0 KV blocks; default: on cuda sized from free GPU memory "
        "(gpu_memory_utilization), on cpu enough for max_num_seqs full-length requests")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="share of the GPU's memory the engine may use in all (weights, "
        "activations, caches); the loop-0 KV pool gets what is left (cuda, num_kv_blocks unset)")
    enable_prefix_caching: bool = Field(
        True, description="reuse loop-0 KV blocks of shared prompt prefixes (exact; rings and carry are "
        "recomputed over a bounded tail of the hit)")
    loop_state_snapshots: int = Field(
        32, ge=0, description="rings and carry kept at the end of this many recent prompts (LRU; loops >= 2 "
        "with prefix caching): a later prompt extending one resumes there instead of recomputing the hit's "
        "tail; each costs one request slot's memory (docs/engine.md); 0: off")
    decode_mode: Literal["fused", "sequential"] = Field(
        "fused", description="fused: all loops of a token in one pass; sequential: one pass per loop (baseline)")
    async_scheduling: bool | None = Field(
        None, description="launch decode step n+1 before the host reads step n's tokens and do the per-request "
        "bookkeeping one step late (overlaps the host with the GPU); None: on with cuda, off on cpu")
    cuda_graphs: bool = Field(True, description="capture decode steps as CUDA graphs (cuda only)")
    graph_batch_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 48, 64])
