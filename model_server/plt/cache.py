"""The PLT decode state of a batch: loop-0 K/V (full), one K/V ring per later loop and layer, the CLP carry.

Layout (plt_spec.md section 5): loop 0 writes every position's K/V once; every later loop reads it as
its global branch. Loop r >= 1 keeps only the last ``window`` K/V of its own, in a ring where absolute
slot p lives at index p % window. The carry holds, per request, the previous slot's output of loops
0..R-2 (CLP input of loops 1..R-1 at the next slot), zero before the first token.

Slots are positions in the padded batch; ``key_valid`` marks which slots hold real tokens (left padding
in batched generation), ``num_valid`` counts them per row so RoPE positions skip the padding.
"""
from __future__ import annotations

import torch

from ..errors import ModelError


class PLTCache:
    """Mutable per-batch state; created empty and filled lazily by the model's forward."""

    is_compileable = False  # read by transformers' generate()

    def __init__(self, num_layers: int, num_loops: int, window: int):
        self.num_layers = num_layers
        self.num_loops = num_loops
        self.window = window
        self.key: list[torch.Tensor | None] = [None] * num_layers  # [B, S, G, D]
        self.value: list[torch.Tensor | None] = [None] * num_layers
        self.ring_key: list[torch.Tensor | None] = [None] * num_layers  # [B, R-1, window, G, D]
        self.ring_value: list[torch.Tensor | None] = [None] * num_layers
        self.carry: torch.Tensor | None = None  # [R - 1, B, d]
        self.key_valid: torch.Tensor | None = None  # [B, S] bool
        self.num_valid: torch.Tensor | None = None  # [B] long
        self.seen = 0

    # -- transformers generate() protocol -------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows (beam search and batch filtering)."""
        def pick(t):
            return None if t is None else t.index_select(0, beam_idx.to(t.device))
        self.key = [pick(t) for t in self.key]
        self.value = [pick(t) for t in self.value]
        self.ring_key = [pick(t) for t in self.ring_key]
        self.ring_value = [pick(t) for t in self.ring_value]
        if self.carry is not None:
            self.carry = self.carry.index_select(1, beam_idx.to(self.carry.device))
        self.key_valid = pick(self.key_valid)
        self.num_valid = pick(self.num_valid)

    # -- bookkeeping ------------------------------------------------------------------------------
    def check_loops(self, num_loops: int) -> None:
        if num_loops != self.num_loops:
            raise ModelError(f"cache was built for {self.num_loops} loops, forward asked for {num_loops}")

    def begin_chunk(self, new_valid: torch.Tensor) -> torch.Tensor:
        """Register T new slots ([B, T] bool validity); return their RoPE positions [B, T]."""
        batch = new_valid.shape[0]
        if self.key_valid is None:
            self.key_valid = new_valid.new_zeros(batch, 0)
            self.num_valid = torch.zeros(batch, dtype=torch.long, device=new_valid.device)
        elif self.key_valid.shape[0] != batch:
            raise ModelError(f"cache holds a batch of {self.key_valid.shape[0]} rows, input has {batch}")
        positions = self.num_valid[:, None] + new_valid.long().cumsum(1) - 1
        self.key_valid = torch.cat([self.key_valid, new_valid], dim=1)
        self.num_valid = self.num_valid + new_valid.long().sum(1)
        return positions.clamp(min=0)

    def end_chunk(self, num_new: int) -> None:
        self.seen += num_new

    def carry_or_zeros(self, batch: int, hidden: int, dtype: torch.dtype, device) -> torch.Tensor:
        if self.carry is None:
            return torch.zeros(max(self.num_loops - 1, 0), batch, hidden, dtype=dtype, device=device)
        return self.carry

    # -- K/V storage ------------------------------------------------------------------------------
    # Stored token-major, the layout the kernels read: loop 0 [B, S, G, D], rings [B, R-1, window, G, D].
    # The torch attention path reads transposed views [B, G, S, D] of the same memory.
    def append_global(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append loop-0 K/V [B, G, T, D] for the new slots; return the full [B, G, S, D] views."""
        key, value = key.transpose(1, 2), value.transpose(1, 2)
        if self.key[layer] is None:
            self.key[layer], self.value[layer] = key.contiguous(), value.contiguous()
        else:
            self.key[layer] = torch.cat([self.key[layer], key], dim=1)
            self.value[layer] = torch.cat([self.value[layer], value], dim=1)
        return self.global_kv(layer)

    def global_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.key[layer].transpose(1, 2), self.value[layer].transpose(1, 2)

    def ring_tensors(self, layer: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All rings of ``layer``, [B, R-1, window, G, D], allocated on first use (``like``: [B, G, T, D])."""
        if self.ring_key[layer] is None:
            b, g, _, d = like.shape
            shape = (b, self.num_loops - 1, self.window, g, d)
            self.ring_key[layer], self.ring_value[layer] = like.new_zeros(shape), like.new_zeros(shape)
        return self.ring_key[layer], self.ring_value[layer]

    def ring(self, loop: int, layer: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ring K/V of ``loop`` (>= 1) at ``layer`` as [B, G, window, D] views."""
        ring_k, ring_v = self.ring_tensors(layer, like)
        return ring_k[:, loop - 1].transpose(1, 2), ring_v[:, loop - 1].transpose(1, 2)

    def write_ring(self, loop: int, layer: int, start: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store K/V [B, G, T, D] of slots start..start+T-1; only the last ``window`` of them survive."""
        ring_k, ring_v = self.ring_tensors(layer, key)
        t = key.shape[2]
        keep = min(t, self.window)
        slots = torch.arange(start + t - keep, start + t, device=key.device) % self.window
        ring_k[:, loop - 1].index_copy_(1, slots, key[:, :, t - keep:].transpose(1, 2))
        ring_v[:, loop - 1].index_copy_(1, slots, value[:, :, t - keep:].transpose(1, 2))
