"""Who runs next: continuous batching with chunked prefill and preemption by recomputation.

Each step is either a prefill step (chunks of waiting prompts, up to ``max_num_batched_tokens``
tokens) or a decode step (one token for every running request). Prefill goes first so new requests
join the running batch quickly; the token budget bounds how long decodes wait. When the KV blocks run
out during decode, the newest request is preempted: its cache is freed and it is recomputed from its
first token later, which is exact for PLT (the carry restarts from zero at token 0, as it did).

Prefix caching: a request admitted with its first full blocks in the cache (block_manager.py) takes
them and skips their loop-0 K/V. Loops >= 1 need two more things at the end of the hit: their rings
(the last window - 1 positions of every layer) and the carry. Neither is stored; both depend only on a
bounded tail (docs/engine.md): loop r's hidden state at layer l depends on its layer-0 inputs at most
l * (window - 1) positions back (the local window; the global branch reads loop-0 K/V, which is
cached), and loop r's input needs loop r-1's output one position earlier. So running all loops again
over the last ``recompute_tail = (R-1) * (L * (window-1) + 1)`` positions of the hit (memory.py; reading
the cached loop-0 K/V, writing nothing into it), starting from an empty ring and a zero carry, ends with
exactly the rings and carry of an uncached run: whatever the start is wrong about lies outside what
the end depends on.

Loop-state snapshots (loop_state.py) shorten that: the engine keeps the rings and carry of recent
prompts' ends (position P, taken when a sequence's prefill target is reached, before any decode step),
and of a request's ``snapshot_at`` point (``snapshot_point``: rounded down to a block; its prefill chunk
is cut there so the state exists). A chat's next prompt leaves the previous one a few tokens before P
(the generation prompt, e.g. an empty think block, is not part of the history it re-sends), so the hit
ends below P and only a snapshot at the history's end, which the API server names, is in reach.
At admission, the snapshot of the request's own first P tokens with the largest P in
(hit end - recompute_tail, hit end] (and P below the prefill target: its last token is computed for
its logits) is restored into the slot and the first chunk starts at P, not fresh: positions P.. are then
computed exactly as without the cache, reading the cached loop-0 K/V up to the hit's end and the restored
rings and carry before P. An agent's next turn thus recomputes only the answer it extends. A preempted
request re-prefilling its prompt and outputs is snapshotted at its prefill target too (as exact, though a
later prompt rarely extends it).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .block_manager import BlockManager
from .loop_state import LoopState, LoopStateStore
from .sequence import Sequence, Status


@dataclass
class PrefillChunk:
    seq: Sequence
    start: int  # first position of the chunk
    length: int
    write_from: int = 0  # positions below hold cached loop-0 K/V (prefix cache): not written again
    fresh: bool = False  # starts the recompute of a cache hit's tail: no ring entries before it, zero carry
    restore: LoopState | None = None  # snapshot of the rings and carry at ``start``, copied in before it runs

    @property
    def samples(self) -> bool:
        """The chunk ends the prompt of a request that has no output yet: sample its first token."""
        return self.start + self.length == self.seq.prefill_target and not self.seq.output_ids


@dataclass
class Schedule:
    prefill: list[PrefillChunk]
    decode: list[Sequence]


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 recompute_tail: int = 0, max_prefill_context: int | None = None,
                 snapshots: LoopStateStore | None = None):
        self.blocks = blocks
        self.snapshots = snapshots
        # The prefill gathers each chunk's whole context (loop-0 K/V of every earlier position): a step
        # takes chunks until their contexts add up to this many tokens (memory.py sizes for it).
        self.max_prefill_context = max_prefill_context
        self.recompute_tail = recompute_tail
        # prefix cache: prompt tokens found cached, of those the ones run again (the tail), and the
        # ones skipped entirely; admissions resumed from a loop-state snapshot
        self.cache_hit_tokens = self.cache_recomputed_tokens = self.cache_skipped_tokens = 0
        self.snapshot_hits = 0
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Schedule:
        chunks = self._schedule_prefill()
        if chunks:
            return Schedule(chunks, [])
        return Schedule([], self._schedule_decode())

    def _schedule_prefill(self) -> list[PrefillChunk]:
        budget = self.max_num_batched_tokens
        chunks: list[PrefillChunk] = []
        # Requests already admitted but not fully prefilled first, then new ones.
        candidates = [s for s in self.running if s.in_prefill] + list(self.waiting)
        context = 0
        for seq in candidates:
            if budget <= 0:
                break
            if chunks and self.max_prefill_context is not None and context + seq.num_tokens > self.max_prefill_context:
                break
            if seq.status is Status.WAITING:
                if len(self.running) >= self.max_num_seqs or not self.blocks.has_slot():
                    break
                chunk = self._admit(seq, budget)
                if chunk is None:
                    break
            else:
                length = self._cut(seq, seq.num_computed, min(seq.prefill_target - seq.num_computed, budget))
                if not self.blocks.can_grow(seq, seq.num_computed + length):
                    break
                chunk = PrefillChunk(seq, seq.num_computed, length, write_from=seq.num_cached)
            self.blocks.grow(seq, chunk.start + chunk.length)
            chunks.append(chunk)
            budget -= chunk.length
            context += chunk.start + chunk.length
        return chunks

    def snapshot_point(self, seq: Sequence) -> int:
        """Where, below its prompt's end, this request's loop state is also kept: ``params.snapshot_at``
        rounded down to a block (a later hit ends on a block boundary at or above it), or 0: none."""
        if self.snapshots is None or not seq.params.snapshot_at:
            return 0
        bs = self.blocks.block_size
        point = seq.params.snapshot_at // bs * bs
        return point if 0 < point < len(seq.prompt_ids) else 0

    def snapshot_due(self, seq: Sequence) -> bool:
        """After a prefill chunk: whether the engine keeps ``seq``'s loop state where it now stands (its
        prompt's end, or its snapshot point)."""
        return self.snapshots is not None and (not seq.in_prefill or seq.num_computed == self.snapshot_point(seq))

    def _cut(self, seq: Sequence, start: int, length: int) -> int:
        """A chunk's length, cut so that it ends at the request's snapshot point when it would cross it."""
        point = self.snapshot_point(seq)
        return point - start if start < point < start + length else length

    def _admission(self, seq: Sequence, budget: int) -> tuple[list[int], int, int, tuple | None] | None:
        """(cached blocks hit, first position to compute, chunk length, (snapshot key, snapshot) to resume
        from or None) of a waiting request's first chunk, or None if its blocks do not fit; changes nothing."""
        bs = self.blocks.block_size
        hit = self.blocks.match(seq)
        start = max(0, len(hit) * bs - self.recompute_tail) if hit else 0
        found = None
        if hit and self.snapshots is not None:
            found = self.snapshots.find(seq, start, min(len(hit) * bs, seq.prefill_target - 1))
            if found is not None:
                start = found[0][0]
        length = self._cut(seq, start, min(seq.prefill_target - start, budget))
        if max(0, -(-(start + length) // bs) - len(hit)) > self.blocks.free_after_taking(hit):
            return None
        return hit, start, length, found

    def _admit(self, seq: Sequence, budget: int) -> PrefillChunk | None:
        """A waiting request's first chunk, taking its cached prefix, or None if its blocks do not fit."""
        admission = self._admission(seq, budget)
        if admission is None:
            return None
        hit, start, length, found = admission
        cached = len(hit) * self.blocks.block_size
        self.waiting.remove(seq)
        self.blocks.take_slot(seq)
        self.blocks.take_cached(seq, hit)
        seq.num_cached, seq.recompute_from, seq.num_computed = cached, start, start
        if not seq.output_ids:  # first admission (a preempted request keeps what it reported)
            seq.cached_tokens = start
        self.cache_hit_tokens += cached
        self.cache_recomputed_tokens += cached - start
        self.cache_skipped_tokens += start
        seq.status = Status.RUNNING
        self.running.append(seq)
        if found is None:
            return PrefillChunk(seq, start, length, write_from=cached, fresh=start > 0)
        key, state = found
        self.snapshots.touch(key)
        self.snapshot_hits += 1
        return PrefillChunk(seq, start, length, write_from=cached, restore=state)

    def prefill_ready(self) -> bool:
        """Whether schedule() would run a prefill step now (changes nothing): a running request has prompt
        left, or the first waiting one can be admitted. (A running request whose next chunk lacks blocks
        also answers True: the caller then schedules synchronously, which decides.)"""
        if any(s.in_prefill for s in self.running):
            return True
        if not self.waiting or len(self.running) >= self.max_num_seqs or not self.blocks.has_slot():
            return False
        return self._admission(self.waiting[0], self.max_num_batched_tokens) is not None

    def _schedule_decode(self) -> list[Sequence]:
        batch = [s for s in self.running if not s.in_prefill]
        for seq in list(batch):
            while seq in batch and not self.blocks.can_grow(seq, seq.num_tokens):
                victim = batch[-1]
                self.preempt(victim)
                batch.remove(victim)
            if seq in batch:
                self.blocks.grow(seq, seq.num_tokens)
        return batch

    def fork(self, parent: Sequence, child: Sequence) -> tuple[bool, tuple[int, int] | None]:
        """Run ``child`` on a copy of parent's prompt cache (n > 1): (admitted, block pair to copy).

        Without a free slot, batch place or block the child waits instead, and computes the prompt
        itself when admitted, like a preempted request (exact for PLT: it starts from a zero carry).
        """
        child.cached_tokens = parent.cached_tokens
        if len(self.running) >= self.max_num_seqs or not self.blocks.can_fork(parent):
            child.status, child.num_computed = Status.WAITING, 0
            self.waiting.appendleft(child)
            return False, None
        copy = self.blocks.fork(parent, child)
        child.status = Status.RUNNING
        self.running.append(child)
        return True, copy

    def preempt(self, seq: Sequence) -> None:
        self.blocks.release(seq)
        self.running.remove(seq)
        seq.status = Status.WAITING
        seq.num_computed = seq.num_cached = seq.recompute_from = 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status = Status.FINISHED
        seq.finish_reason = reason
        self.blocks.release(seq)
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
