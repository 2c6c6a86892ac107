"""Native inference engine for PLT models: continuous batching, chunked prefill, paged loop-0 KV,
per-request rings and CLP carry, fused one-pass decode of all loops, CUDA graphs.

One concept per module: ``scheduler`` (who runs next), ``block_manager`` (cache bookkeeping),
``model_runner`` (tensors and forwards), ``sampler``, ``grammar`` (constrained decoding), ``llm_engine`` (the loop and its asyncio front).
"""
from .config import EngineConfig
from .llm_engine import AsyncLLMEngine, LLMEngine, RequestStream
from .types import (EngineOverloaded, EngineStats, GrammarError, GrammarSpec, RequestTooLong, SamplingParams,
                    TokenEvent, TokenLogprob)

__all__ = ["AsyncLLMEngine", "EngineConfig", "EngineOverloaded", "EngineStats", "GrammarError", "GrammarSpec",
           "LLMEngine", "RequestStream", "RequestTooLong", "SamplingParams", "TokenEvent", "TokenLogprob"]
