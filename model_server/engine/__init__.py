"""Native inference engine for PLT models: continuous batching, chunked prefill, paged loop-0 KV,
per-request rings and CLP carry, fused one-pass decode of all loops, CUDA graphs.

One concept per module: ``scheduler`` (who runs next), ``block_manager`` (cache bookkeeping),
``model_runner`` (tensors and forwards), ``sampler``, ``llm_engine`` (the loop and its asyncio front).
"""
from .config import EngineConfig
from .llm_engine import AsyncLLMEngine, LLMEngine
from .types import EngineOverloaded, EngineStats, RequestTooLong, SamplingParams, TokenEvent

__all__ = ["AsyncLLMEngine", "EngineConfig", "EngineOverloaded", "EngineStats", "LLMEngine", "RequestTooLong",
           "SamplingParams", "TokenEvent"]
