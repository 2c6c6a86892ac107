"""Stand-in of sglang.srt.layers.vocab_parallel_embedding: rank r holds vocabulary rows
[r*V/tp, (r+1)*V/tp) (V padded to a multiple of tp); a lookup zeroes tokens outside the rank's rows and
all-reduces. ParallelLMHead has the same layout; the logits are gathered by LogitsProcessor."""
from __future__ import annotations

import torch
from torch import nn

from sglang.srt.distributed import (
    get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size, tensor_model_parallel_all_reduce,
)


class VocabParallelEmbedding(nn.Module):
    def __init__(self, num_embeddings, embedding_dim, params_dtype=None, org_num_embeddings=None,
                 padding_size=1, quant_config=None, prefix=""):
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.num_embeddings = num_embeddings
        self.per_rank = -(-num_embeddings // tp)
        self.first = get_tensor_model_parallel_rank() * self.per_rank
        self.weight = nn.Parameter(torch.zeros(self.per_rank, embedding_dim), requires_grad=False)
        self.weight.weight_loader = self.weight_loader

    def weight_loader(self, param, loaded_weight):
        rows = max(0, min(self.per_rank, loaded_weight.shape[0] - self.first))
        param.data[:rows].copy_(loaded_weight[self.first: self.first + rows])

    def forward(self, input_ids):
        local = input_ids - self.first
        inside = (local >= 0) & (local < self.per_rank)
        out = self.weight[local.clamp(0, self.per_rank - 1)] * inside[:, None]
        return tensor_model_parallel_all_reduce(out)


class ParallelLMHead(VocabParallelEmbedding):
    def __init__(self, num_embeddings, embedding_dim, bias=False, params_dtype=None, org_num_embeddings=None,
                 padding_size=1, quant_config=None, prefix=""):
        super().__init__(num_embeddings, embedding_dim, prefix=prefix)
