"""Bookkeeping of cache memory: loop-0 KV blocks (paged) and per-request slots (rings and carry).

Loop 0's K/V grows with the sequence, so it is paged in blocks of ``block_size`` tokens. Loops >= 1
keep a fixed ring of ``window`` K/V and the CLP carry, so each running request holds one slot of a
fixed pool. Prefix caching is off: a PLT block is reusable only together with the carry at its last
token, which this manager does not keep, and a zero carry would be silently wrong.
"""
from __future__ import annotations

from collections import deque

from .sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, num_slots: int):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.free_slots: deque[int] = deque(range(num_slots))

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        return max(0, -(-num_tokens // self.block_size) - len(seq.block_table))

    def can_grow(self, seq: Sequence, num_tokens: int) -> bool:
        return self.blocks_needed(seq, num_tokens) <= len(self.free_blocks)

    def grow(self, seq: Sequence, num_tokens: int) -> None:
        """Make seq's block table cover ``num_tokens`` tokens."""
        for _ in range(self.blocks_needed(seq, num_tokens)):
            seq.block_table.append(self.free_blocks.popleft())

    def has_slot(self) -> bool:
        return bool(self.free_slots)

    def take_slot(self, seq: Sequence) -> int:
        seq.slot = self.free_slots.popleft()
        return seq.slot

    def release(self, seq: Sequence) -> None:
        """Give back everything seq holds (finish, abort or preemption)."""
        self.free_blocks.extend(seq.block_table)
        seq.block_table = []
        if seq.slot is not None:
            self.free_slots.append(seq.slot)
            seq.slot = None

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self.free_blocks)
