"""Stand-in of sglang.srt.layers.linear: the tensor-parallel layouts SGLang's linear layers document.

QKVParallelLinear: rank r holds query heads [r*H/tp, (r+1)*H/tp) and KV heads [r*G/tp, ...) or, with
fewer KV heads than ranks, KV head r // (tp / G) (replicated); rows ordered [q; k; v]; loader shard ids
"q" / "k" / "v". MergedColumnParallelLinear: rank r holds rows [r*o_i/tp, (r+1)*o_i/tp) of every output
o_i, stacked in order; shard ids 0, 1, ... RowParallelLinear: rank r holds input columns
[r*in/tp, (r+1)*in/tp); the partial products are all-reduced, the bias added once. forward returns
(output, output_bias) with output_bias None, as SGLang's do (skip_bias_add off).
"""
from __future__ import annotations

import torch
from torch import nn

from sglang.srt.distributed import (
    get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size, tensor_model_parallel_all_reduce,
)


def _param(*shape):
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class QKVParallelLinear(nn.Module):
    def __init__(self, hidden_size, head_size, total_num_heads, total_num_kv_heads=None, bias=True,
                 quant_config=None, prefix=""):
        super().__init__()
        tp, rank = get_tensor_model_parallel_world_size(), get_tensor_model_parallel_rank()
        total_num_kv_heads = total_num_kv_heads or total_num_heads
        self.head_size, self.rank, self.tp = head_size, rank, tp
        self.num_heads = total_num_heads // tp
        if total_num_kv_heads >= tp:
            self.num_kv_heads, self.kv_first = total_num_kv_heads // tp, rank * (total_num_kv_heads // tp)
        else:
            self.num_kv_heads, self.kv_first = 1, rank // (tp // total_num_kv_heads)
        rows = (self.num_heads + 2 * self.num_kv_heads) * head_size
        self.weight = _param(rows, hidden_size)
        self.weight.weight_loader = self.weight_loader
        self.bias = None
        if bias:
            self.bias = _param(rows)
            self.bias.weight_loader = self.weight_loader

    def weight_loader(self, param, loaded_weight, loaded_shard_id):
        d, q = self.head_size, self.num_heads * self.head_size
        kv = self.num_kv_heads * d
        if loaded_shard_id == "q":
            offset, size, start = 0, q, self.rank * q
        elif loaded_shard_id == "k":
            offset, size, start = q, kv, self.kv_first * d
        elif loaded_shard_id == "v":
            offset, size, start = q + kv, kv, self.kv_first * d
        else:
            raise ValueError(loaded_shard_id)
        param.data.narrow(0, offset, size).copy_(loaded_weight.narrow(0, start, size))

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias), None


class MergedColumnParallelLinear(nn.Module):
    def __init__(self, input_size, output_sizes, bias=True, quant_config=None, prefix=""):
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.rank, self.local_sizes = get_tensor_model_parallel_rank(), [o // tp for o in output_sizes]
        self.weight = _param(sum(self.local_sizes), input_size)
        self.weight.weight_loader = self.weight_loader
        self.bias = None
        if bias:
            self.bias = _param(sum(self.local_sizes))
            self.bias.weight_loader = self.weight_loader

    def weight_loader(self, param, loaded_weight, loaded_shard_id):
        size = self.local_sizes[loaded_shard_id]
        offset = sum(self.local_sizes[:loaded_shard_id])
        param.data.narrow(0, offset, size).copy_(loaded_weight.narrow(0, self.rank * size, size))

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias), None


class RowParallelLinear(nn.Module):
    def __init__(self, input_size, output_size, bias=True, input_is_parallel=True, skip_bias_add=False,
                 params_dtype=None, reduce_results=True, quant_config=None, prefix=""):
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.rank, self.local_in, self.reduce_results = get_tensor_model_parallel_rank(), input_size // tp, reduce_results
        self.weight = _param(output_size, self.local_in)
        self.weight.weight_loader = self.weight_loader
        self.bias = None
        if bias:
            self.bias = _param(output_size)

    def weight_loader(self, param, loaded_weight):
        param.data.copy_(loaded_weight.narrow(1, self.rank * self.local_in, self.local_in))

    def forward(self, x):
        out = nn.functional.linear(x, self.weight)
        if self.reduce_results:
            out = tensor_model_parallel_all_reduce(out)
        if self.bias is not None:
            out = out + self.bias
        return out, None
