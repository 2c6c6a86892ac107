"""Stand-in of sglang.srt.layers.logits_processor.LogitsProcessor: next-token logits of each request's
last new token (extend) or of every row (decode), gathered over the vocabulary shards of all ranks."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sglang.srt.distributed import tensor_model_parallel_all_gather


@dataclass
class LogitsProcessorOutput:
    next_token_logits: torch.Tensor


class LogitsProcessor(nn.Module):
    def __init__(self, config, skip_all_gather: bool = False, logit_scale=None):
        super().__init__()
        self.vocab_size = config.vocab_size

    def forward(self, input_ids, hidden_states, lm_head, forward_batch, aux_hidden_states=None):
        if forward_batch.forward_mode.is_extend():
            last = torch.cumsum(forward_batch.extend_seq_lens, dim=0) - 1
            hidden_states = hidden_states[last]
        logits = nn.functional.linear(hidden_states, lm_head.weight)
        logits = tensor_model_parallel_all_gather(logits, dim=-1)[:, : self.vocab_size]
        return LogitsProcessorOutput(next_token_logits=logits)
