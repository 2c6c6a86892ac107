"""One request as the engine tracks it."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from .types import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)  # identity: `seq in batch` must not compare prompts field by field (O(B^2) per step)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    arrival: float
    output_ids: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    num_computed: int = 0  # leading tokens whose K/V (and carry) are in the cache
    block_table: list[int] = field(default_factory=list)
    slot: int | None = None  # ring + carry slot while running
    finish_reason: str | None = None
    generator: torch.Generator | None = None
    num_emitted: int = 0  # output tokens already reported to the caller
    output_logprobs: list = field(default_factory=list)  # TokenLogprob per output token, if asked
    grammar: object | None = None  # xgrammar matcher of params.grammar (grammar.py)
    # Requests that sample from this prompt too (n > 1): they wait, outside the scheduler, until this
    # request's prefill is done, then take a copy of its cache instead of computing the prompt again.
    forks: list["Sequence"] = field(default_factory=list)
    fork_of: "Sequence | None" = None
    # Prefix cache (block_manager.py): loop-0 K/V of positions < num_cached came from cached blocks and is
    # never written; positions [recompute_from, num_cached) run through the loops again to rebuild the
    # rings and the carry. cached_tokens: prompt tokens not computed at all at first admission (usage).
    num_cached: int = 0
    recompute_from: int = 0
    cached_tokens: int = 0
    num_hashed: int = 0  # leading blocks of block_table already looked up or entered in the cache
    hash_parent: int = 0  # key id of block num_hashed - 1 (0: none)
    # Decode steps launched whose sampled token the host has not read yet (async scheduling, llm_engine.py):
    # their tokens exist only on the device, so they are not in output_ids (nor counted in num_computed).
    num_pending: int = 0

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    def token_slice(self, start: int, end: int) -> tuple[int, ...]:
        """token_ids[start:end] as a tuple, without building the whole list."""
        n = len(self.prompt_ids)
        if end <= n:
            return tuple(self.prompt_ids[start:end])
        if start >= n:
            return tuple(self.output_ids[start - n:end - n])
        return tuple(self.prompt_ids[start:]) + tuple(self.output_ids[:end - n])

    @property
    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def next_position(self) -> int:
        """Position of the next decode step's input token (the newest token, read or still pending)."""
        return self.num_tokens - 1 + self.num_pending

    @property
    def prefill_target(self) -> int:
        """Tokens to run before decoding: the prompt, or after a preemption all but the newest token
        (which the next decode step consumes)."""
        return self.num_tokens - (1 if self.output_ids else 0)

    @property
    def in_prefill(self) -> bool:
        return self.num_computed < self.prefill_target
