"""What goes into and comes out of the native engine: sampling settings, token events, statistics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


# Structural whitespace allowed in a row inside constrained JSON: room for pretty printing (indent 2 to
# depth 7), but a weak model can no longer fill its answer with whitespace (unbounded, a random model's
# JSON answers averaged 200 tokens; bounded, 50).
JSON_MAX_WHITESPACE = 16


class GrammarSpec(BaseModel):
    """A constraint on the output, compiled by ``engine/grammar.py`` (xgrammar) into a token mask.

    kind: ``json_schema`` (value: a JSON schema), ``json_object`` (any JSON object; value ignored),
    ``regex``, ``ebnf`` (GBNF-style grammar with a ``root`` rule), ``structural_tag`` (value: xgrammar's
    structural-tag JSON, the format vLLM and SGLang accept). The mask starts at the first output token.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["json_schema", "json_object", "regex", "ebnf", "structural_tag"]
    value: str = ""


class SamplingParams(BaseModel):
    """Per-request decoding settings. temperature 0 means greedy; top_k 0 means no top-k cut.

    Order of the logit processing (all batched in ``sampler.py``): ``logit_bias`` added, penalties over
    the tokens generated so far (``repetition_penalty`` also over the prompt), the grammar mask, then
    temperature, top-k and top-p. ``logprobs`` (0-20): report the sampled token's log-probability and
    that many alternatives, taken from the model's raw distribution (before any of the processing,
    as vLLM does by default).
    """

    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    seed: int | None = None
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    logit_bias: dict[int, float] = Field(default_factory=dict)
    logprobs: int | None = Field(None, ge=0, le=20)
    grammar: GrammarSpec | None = None
    # A caching hint, not a decoding setting: also keep the loop state (loop_state.py) at this prompt
    # position, rounded down to a block, where the client's next prompt will leave this one (a chat
    # history's end, before the generation prompt: the API server sets it). Changes no token.
    snapshot_at: int | None = Field(None, ge=1)

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0)


@dataclass
class TokenLogprob:
    """The sampled token's log-probability and the ``top`` most likely tokens, as (id, logprob)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class TokenEvent:
    """New tokens of one request after one engine step; the last event of a request has finished=True.

    finish_reason: "stop" (an EOS or stop id was sampled, it is included in token_ids; or the grammar
    was completed), "length" (max_tokens or the model's context reached), "abort" (aborted by the
    caller or the client left), "error" (the engine failed). ``logprobs`` is one entry per token id
    when the request asked for them.
    """

    request_id: str
    token_ids: list[int]
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache, not computed (usage)


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
    # prefix cache: prompt tokens found cached; of those, run again to rebuild rings and carry, and
    # skipped entirely; cached blocks (held or evictable); blocks evicted
    prefix_cache_hit_tokens_total: int = 0
    prefix_cache_recomputed_tokens_total: int = 0
    prefix_cache_skipped_tokens_total: int = 0
    prefix_cache_blocks: int = 0
    prefix_cache_evictions_total: int = 0
    # admissions resumed from a loop-state snapshot (no tail recompute); snapshots held (loop_state.py)
    prefix_cache_snapshot_hits_total: int = 0
    loop_state_snapshots: int = 0
    ready: bool = True  # warm-up done
    decode_steps_total: int = 0
    decode_seconds_total: float = 0.0  # wall time of those steps, sampling included
    preemptions_total: int = 0  # running requests put back to wait (their cache freed, recomputed later)


class EngineOverloaded(RuntimeError):
    """The waiting queue is full; callers should answer 429 and let the client retry."""


class RequestTooLong(ValueError):
    """The prompt (plus at least one new token) does not fit the engine's max_model_len."""

    def __init__(self, message: str, prompt_tokens: int = 0, max_model_len: int = 0):
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.max_model_len = max_model_len


class GrammarError(ValueError):
    """A grammar (JSON schema, regex, EBNF, structural tag) that cannot be compiled."""
