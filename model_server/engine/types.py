"""What goes into and comes out of the native engine: sampling settings, token events, statistics."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    """Per-request decoding settings. temperature 0 means greedy; top_k 0 means no top-k cut."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    seed: int | None = None
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False


@dataclass
class TokenEvent:
    """New tokens of one request after one engine step; the last event of a request has finished=True.

    finish_reason: "stop" (an EOS or stop id was sampled; it is included in token_ids), "length"
    (max_tokens or the model's context reached), "abort" (aborted by the caller or the client left).
    """

    request_id: str
    token_ids: list[int]
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass
class EngineStats:
    """Counters for /metrics and /health."""

    num_waiting: int
    num_running: int
    kv_blocks_used: int
    kv_blocks_total: int
    prompt_tokens_total: int
    generation_tokens_total: int
    requests_finished_total: int
    requests_aborted_total: int
    steps_total: int


class EngineOverloaded(RuntimeError):
    """The waiting queue is full; callers should answer 429 and let the client retry."""


class RequestTooLong(ValueError):
    """The prompt (plus at least one new token) does not fit the engine's max_model_len."""
