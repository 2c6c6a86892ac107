"""Stand-in of sglang.srt.model_executor.forward_batch_info: ForwardMode and the ForwardBatch fields the
plugin reads (names and meanings as in SGLang 0.5.23; seq_lens include the new tokens). As in 0.5.23 the
batch does not carry the pools: they come from forward_context."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, auto
from typing import Optional

import torch


class ForwardMode(IntEnum):
    EXTEND = auto()
    DECODE = auto()
    MIXED = auto()
    IDLE = auto()
    TARGET_VERIFY = auto()

    def is_extend(self, include_draft_extend_v2: bool = False):
        return self in (ForwardMode.EXTEND, ForwardMode.MIXED, ForwardMode.TARGET_VERIFY)

    def is_decode(self):
        return self == ForwardMode.DECODE

    def is_mixed(self):
        return self == ForwardMode.MIXED

    def is_idle(self):
        return self == ForwardMode.IDLE


@dataclass
class ForwardBatch:
    forward_mode: ForwardMode
    batch_size: int
    input_ids: torch.Tensor
    req_pool_indices: torch.Tensor
    seq_lens: torch.Tensor
    out_cache_loc: torch.Tensor
    positions: torch.Tensor
    extend_seq_lens: Optional[torch.Tensor] = None
    extend_prefix_lens: Optional[torch.Tensor] = None
    extend_seq_lens_cpu: Optional[list] = None
    extend_prefix_lens_cpu: Optional[list] = None
    rids: Optional[list] = None
