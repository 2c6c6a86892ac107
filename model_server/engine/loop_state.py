"""Loop-state snapshots at prompt ends: a prefix-cache hit resumes exactly where an earlier prompt ended.

A prefix-cache hit brings back loop-0 K/V only; loops >= 1 also need their rings and the carry, which the
scheduler otherwise rebuilds by running all loops over the hit's last ``recompute_tail`` positions
(scheduler.py). An agent's next prompt is its previous prompt, the answer and a new observation, so the
rings and carry of a slot right when its prompt's prefill ends (position P, before a decode step
overwrites a ring entry) are exactly what the next turn needs at P: it restores them and computes from P,
i.e. only the answer and the new tokens instead of the whole tail.

A snapshot is keyed by P and a digest of the tokens before P; its value does not depend on anything
else (the weights and loop count are the engine's own). Eviction is LRU over a fixed number of
snapshots, each exactly one slot's rings and carry (``memory.slot_bytes``).
"""
from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .sequence import Sequence


@dataclass(frozen=True)
class LoopState:
    """Clones of one slot's rings [L, R-1, window, G, D] (K and V) and carry [R-1, d] at position P."""
    ring_k: torch.Tensor
    ring_v: torch.Tensor
    carry: torch.Tensor


def digest(tokens) -> bytes:
    """A 128-bit digest of token ids (their int64 bytes). It is all that ties a snapshot to a request's
    tokens, so a wrong restore would need two different token sequences of one length with the same
    digest (about 2^-128 per pair)."""
    return hashlib.blake2b(array("q", tokens).tobytes(), digest_size=16).digest()


class LoopStateStore:
    """At most ``capacity`` snapshots, least recently taken or used evicted first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._states: OrderedDict[tuple[int, bytes], LoopState] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: tuple[int, bytes]) -> bool:
        return key in self._states

    @staticmethod
    def key(seq: Sequence, position: int) -> tuple[int, bytes]:
        return position, digest(seq.token_slice(0, position))

    def put(self, key: tuple[int, bytes], state: LoopState) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)
            self.evictions += 1

    def keep(self, seq: Sequence, take) -> None:
        """Keep ``seq``'s loop state at its computed length: ``take()`` makes the snapshot, unless one of the
        same tokens is held already (then it only counts as used)."""
        key = self.key(seq, seq.num_computed)
        if key in self._states:
            self.touch(key)
        else:
            self.put(key, take())

    def find(self, seq: Sequence, low: int, high: int) -> tuple[tuple[int, bytes], LoopState] | None:
        """(key, snapshot) of seq's own first P tokens with the largest P, low < P <= high; changes nothing.
        Each candidate length costs one digest of seq's first P tokens."""
        mine = {}
        for key in sorted(self._states, reverse=True):
            position = key[0]
            if low < position <= high:
                if position not in mine:
                    mine[position] = self.key(seq, position)
                if mine[position] == key:
                    return key, self._states[key]
        return None

    def touch(self, key: tuple[int, bytes]) -> None:
        """Mark a snapshot used (LRU order)."""
        self._states.move_to_end(key)
