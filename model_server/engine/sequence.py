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


@dataclass
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

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def prefill_target(self) -> int:
        """Tokens to run before decoding: the prompt, or after a preemption all but the newest token
        (which the next decode step consumes)."""
        return self.num_tokens - (1 if self.output_ids else 0)

    @property
    def in_prefill(self) -> bool:
        return self.num_computed < self.prefill_target
