"""Bookkeeping of cache memory: loop-0 KV blocks (paged, prefix-cached) and per-request slots (rings, carry).

Loop 0's K/V grows with the sequence, so it is paged in blocks of ``block_size`` tokens. Loops >= 1
keep a fixed ring of ``window`` K/V and the CLP carry, so each running request holds one slot of a
fixed pool.

Prefix caching (vLLM's automatic prefix caching, for loop 0 only): a full block whose K/V is written
gets a key, (key id of the block before it, its tokens), so one key names the block's tokens and every
token before them; requests whose prompts start with the same full blocks share them. Blocks are
reference-counted; a block nobody holds but whose content is cached waits in an LRU list and is
evicted (its key dropped) only when no uncached free block is left. Keys compare the tokens themselves
(no hash collisions: a dict lookup checks equality). Loop-0 K/V depends only on the tokens up to it,
so a cached block is exact for any request with the same prefix; the rings of loops >= 1 and the CLP
carry at the end of a hit are not cached: the scheduler recomputes them over a bounded tail of the
hit (scheduler.py, docs/engine.md).

Requests forked from one prompt (n > 1) share the prompt's full blocks too; the partly filled last
block, which decoding writes into, is copied, and so are the ring slot and carry.
"""
from __future__ import annotations

from collections import OrderedDict, deque

from .sequence import Sequence

ROOT = 0  # key id "before the first block"


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, num_slots: int, prefix_caching: bool = False):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.prefix_caching = prefix_caching
        self.free_blocks: deque[int] = deque(range(num_blocks))  # free, no cached content
        self.cached_free: OrderedDict[int, None] = OrderedDict()  # free, cached content; oldest first
        self.free_slots: deque[int] = deque(range(num_slots))
        self.refs = [0] * num_blocks
        self.cache: dict[tuple[int, tuple[int, ...]], int] = {}  # key -> block
        self.block_key: list[tuple[int, tuple[int, ...]] | None] = [None] * num_blocks
        self.block_id: list[int] = [ROOT] * num_blocks  # key id of a cached block (never reused)
        self._next_id = ROOT + 1
        self.evictions = 0

    # -- plain allocation ---------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks a request can take now: uncached free ones plus cached ones nobody holds (evictable)."""
        return len(self.free_blocks) + len(self.cached_free)

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        return max(0, -(-num_tokens // self.block_size) - len(seq.block_table))

    def can_grow(self, seq: Sequence, num_tokens: int) -> bool:
        return self.blocks_needed(seq, num_tokens) <= self.num_free

    def _take_block(self) -> int:
        if self.free_blocks:
            block = self.free_blocks.popleft()
        else:  # evict the least recently freed cached block
            block, _ = self.cached_free.popitem(last=False)
            del self.cache[self.block_key[block]]
            self.block_key[block], self.block_id[block] = None, ROOT
            self.evictions += 1
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

    # -- prefix cache -------------------------------------------------------------------------------
    def match(self, seq: Sequence) -> list[int]:
        """Cached blocks holding seq's leading full blocks, at most up to its prefill target less one
        token (the last prompt token is always computed: its logits are sampled). Not yet taken."""
        if not self.prefix_caching:
            return []
        limit = max(0, seq.prefill_target - 1) // self.block_size
        found, parent = [], ROOT
        for i in range(limit):
            block = self.cache.get((parent, seq.token_slice(i * self.block_size, (i + 1) * self.block_size)))
            if block is None:
                break
            found.append(block)
            parent = self.block_id[block]
        return found

    def free_after_taking(self, blocks: list[int]) -> int:
        """Free blocks left once ``blocks`` (a match) are held: matched blocks nobody held leave the LRU."""
        return self.num_free - sum(1 for b in blocks if self.refs[b] == 0)

    def take_cached(self, seq: Sequence, blocks: list[int]) -> None:
        """Give seq the matched blocks as the start of its (empty) block table."""
        for block in blocks:
            if self.refs[block] == 0:
                del self.cached_free[block]
            self.refs[block] += 1
        seq.block_table = list(blocks)
        seq.num_hashed = len(blocks)
        seq.hash_parent = self.block_id[blocks[-1]] if blocks else ROOT

    def register(self, seq: Sequence) -> None:
        """Cache seq's full blocks whose K/V is now written (its first ``num_computed`` tokens)."""
        if not self.prefix_caching:
            return
        full = min(seq.num_computed // self.block_size, len(seq.block_table))
        while seq.num_hashed < full:
            i = seq.num_hashed
            block = seq.block_table[i]
            key = (seq.hash_parent, seq.token_slice(i * self.block_size, (i + 1) * self.block_size))
            cached = self.cache.get(key)
            if cached is None:
                if self.block_key[block] is not None:  # cannot happen: a cached block is never rewritten
                    raise RuntimeError(f"block {block} is cached under another key")
                self.cache[key] = block
                self.block_key[block], self.block_id[block] = key, self._next_id
                self._next_id += 1
                cached = block
            # else: the same tokens are cached in another block (two requests computed them at once,
            # or this is a fork's shared block); later blocks chain onto the cached one.
            seq.hash_parent = self.block_id[cached]
            seq.num_hashed += 1

    def reset_cache(self) -> None:
        """Forget every cached block that nobody holds (and the keys of the held ones)."""
        for block, key in enumerate(self.block_key):
            if key is not None:
                self.block_key[block], self.block_id[block] = None, ROOT
        self.cache.clear()
        self.free_blocks.extend(self.cached_free)
        self.cached_free.clear()

    @property
    def num_cached_blocks(self) -> int:
        return len(self.cache)

    # -- forks and release --------------------------------------------------------------------------
    def can_fork(self, parent: Sequence) -> bool:
        partial = parent.num_computed % self.block_size != 0
        return self.has_slot() and self.num_free >= int(partial)

    def fork(self, parent: Sequence, child: Sequence) -> tuple[int, int] | None:
        """Give ``child`` the cache of parent's first ``parent.num_computed`` tokens: the full blocks
        shared, a slot of its own; returns (parent's block, child's block) to copy for a partly filled
        last block, else None. The caller copies that block and the slot's rings and carry."""
        full = parent.num_computed // self.block_size
        child.block_table = parent.block_table[:full]
        for block in child.block_table:
            self.refs[block] += 1
        child.num_hashed, child.hash_parent = 0, ROOT
        self.take_slot(child)
        child.num_computed = parent.num_computed
        if parent.num_computed % self.block_size == 0:
            return None
        copy = self._take_block()
        child.block_table.append(copy)
        return parent.block_table[full], copy

    def release(self, seq: Sequence) -> None:
        """Give back everything seq holds (finish, abort or preemption)."""
        cached = []
        for block in seq.block_table:
            self.refs[block] -= 1
            if self.refs[block] == 0:
                if self.block_key[block] is not None:
                    cached.append(block)
                else:
                    self.free_blocks.append(block)
        # Last block first: among blocks freed together, the tail of a prefix is evicted before its head.
        for block in reversed(cached):
            self.cached_free[block] = None
        seq.block_table = []
        seq.num_hashed, seq.hash_parent = 0, ROOT
        if seq.slot is not None:
            self.free_slots.append(seq.slot)
            seq.slot = None

    @property
    def used_blocks(self) -> int:
        """Blocks some request holds (cached blocks nobody holds count as free)."""
        return self.num_blocks - self.num_free
