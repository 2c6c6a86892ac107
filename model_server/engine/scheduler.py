"""Who runs next: continuous batching with chunked prefill and preemption by recomputation.

Each step is either a prefill step (chunks of waiting prompts, up to ``max_num_batched_tokens``
tokens) or a decode step (one token for every running request). Prefill goes first so new requests
join the running batch quickly; the token budget bounds how long decodes wait. When the KV blocks run
out during decode, the newest request is preempted: its cache is freed and it is recomputed from its
first token later, which is exact for PLT (the carry restarts from zero at token 0, as it did).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .block_manager import BlockManager
from .sequence import Sequence, Status


@dataclass
class PrefillChunk:
    seq: Sequence
    start: int  # first position of the chunk
    length: int

    @property
    def samples(self) -> bool:
        """The chunk ends the prompt of a request that has no output yet: sample its first token."""
        return self.start + self.length == self.seq.prefill_target and not self.seq.output_ids


@dataclass
class Schedule:
    prefill: list[PrefillChunk]
    decode: list[Sequence]


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.blocks = blocks
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
        for seq in candidates:
            if budget <= 0:
                break
            if seq.status is Status.WAITING:
                if len(self.running) >= self.max_num_seqs or not self.blocks.has_slot():
                    break
            length = min(seq.prefill_target - seq.num_computed, budget)
            if not self.blocks.can_grow(seq, seq.num_computed + length):
                break
            if seq.status is Status.WAITING:
                self.waiting.remove(seq)
                self.blocks.take_slot(seq)
                seq.status = Status.RUNNING
                self.running.append(seq)
            self.blocks.grow(seq, seq.num_computed + length)
            chunks.append(PrefillChunk(seq, seq.num_computed, length))
            budget -= length
        return chunks

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
        seq.num_computed = 0
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
