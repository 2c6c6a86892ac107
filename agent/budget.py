"""The episode's budgets: model calls, prompt and completion tokens (from the server's usage), wall time, cost.

``exhausted()`` is asked before every model call; its answer is the stop reason.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from loopcoder.agent.client import Usage
from loopcoder.agent.config import Budgets, Price


class Budget:
    def __init__(self, limits: Budgets, price: Optional[Price] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.price = price
        self.clock = clock
        self.started = clock()
        self.steps = 0
        self.input_tokens = 0
        self.output_tokens = 0

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    @property
    def cost_usd(self) -> float:
        if self.price is None:
            return 0.0
        return (self.input_tokens * self.price.input_per_mtok + self.output_tokens * self.price.output_per_mtok) / 1e6

    def charge(self, usage: Usage) -> None:
        self.input_tokens += usage.prompt_tokens
        self.output_tokens += usage.completion_tokens

    def exhausted(self) -> Optional[tuple[str, str]]:
        """(stop reason, what ran out) for the first budget spent, or None."""
        b = self.limits
        if b.steps is not None and self.steps >= b.steps:
            return "steps", f"{self.steps} model calls of {b.steps}"
        if b.input_tokens is not None and self.input_tokens >= b.input_tokens:
            return "input_tokens", f"{self.input_tokens} prompt tokens of {b.input_tokens}"
        if b.output_tokens is not None and self.output_tokens >= b.output_tokens:
            return "output_tokens", f"{self.output_tokens} completion tokens of {b.output_tokens}"
        if b.wall_time_s is not None and self.elapsed_s >= b.wall_time_s:
            return "wall_time", f"{self.elapsed_s:.1f} s of {b.wall_time_s:g} s"
        if b.cost_usd is not None and self.cost_usd >= b.cost_usd:
            return "cost", f"${self.cost_usd:.4f} of ${b.cost_usd:g}"
        return None

    def output_left(self) -> Optional[int]:
        if self.limits.output_tokens is None:
            return None
        return max(1, self.limits.output_tokens - self.output_tokens)

    def used(self) -> dict:
        return {"steps": self.steps, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "wall_time_s": round(self.elapsed_s, 3), "cost_usd": round(self.cost_usd, 6)}
