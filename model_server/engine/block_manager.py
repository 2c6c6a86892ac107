"""Bookkeeping of cache memory: loop-0 KV blocks (paged) and per-request slots (rings and carry).

Loop 0's K/V grows with the sequence, so it is paged in blocks of ``block_size`` tokens. Loops >= 1
keep a fixed ring of ``window`` K/V and the CLP carry, so each running request holds one slot of a
fixed pool. Prefix caching is off: a PLT block is reusable only together with the carry at its last
token, which this manager does not keep, and a zero carry would be silently wrong.

The one sharing there is: requests forked from one prompt (n > 1) share the prompt's full blocks,
which nobody writes again (a block is counted by how many requests hold it and freed at zero); the
partly filled last block, which decoding writes into, is copied, and so are the ring slot and carry.
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
        self.refs = [0] * num_blocks

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        return max(0, -(-num_tokens // self.block_size) - len(seq.block_table))

    def can_grow(self, seq: Sequence, num_tokens: int) -> bool:
        return self.blocks_needed(seq, num_tokens) <= len(self.free_blocks)

    def _take_block(self) -> int:
        block = self.free_blocks.popleft()
        self.refs[block] = 1
        return block

    def grow(self, seq: Sequence, num_tokens: int) -> None:
        """Make seq's block table cover ``num_tokens`` tokens."""
        for _ in range(self.blocks_needed(seq, num_tokens)):
            seq.block_table.append(self._take_block())

    def has_slot(self) -> bool:
        return bool(self.free_slots)

    def take_slot(self, seq: Sequence) -> int:
        seq.slot = self.free_slots.popleft()
        return seq.slot

    def can_fork(self, parent: Sequence) -> bool:
        partial = parent.num_computed % self.block_size != 0
        return self.has_slot() and len(self.free_blocks) >= int(partial)

    def fork(self, parent: Sequence, child: Sequence) -> tuple[int, int] | None:
        """Give ``child`` the cache of parent's first ``parent.num_computed`` tokens: the full blocks
        shared, a slot of its own; returns (parent's block, child's block) to copy for a partly filled
        last block, else None. The caller copies that block and the slot's rings and carry."""
        full = parent.num_computed // self.block_size
        child.block_table = parent.block_table[:full]
        for block in child.block_table:
            self.refs[block] += 1
        self.take_slot(child)
        child.num_computed = parent.num_computed
        if parent.num_computed % self.block_size == 0:
            return None
        copy = self._take_block()
        child.block_table.append(copy)
        return parent.block_table[full], copy

    def release(self, seq: Sequence) -> None:
        """Give back everything seq holds (finish, abort or preemption)."""
        for block in seq.block_table:
            self.refs[block] -= 1
            if self.refs[block] == 0:
                self.free_blocks.append(block)
        seq.block_table = []
        if seq.slot is not None:
            self.free_slots.append(seq.slot)
            seq.slot = None

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self.free_blocks)
