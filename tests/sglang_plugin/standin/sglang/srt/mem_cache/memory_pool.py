"""Stand-in of sglang.srt.mem_cache.memory_pool: ReqToTokenPool (row 0 is the padding row CUDA-graph
padding uses; real requests get rows 1..size) and MHATokenToKVPool (k/v buffers [size + 1, G, D] per
layer, token 0 the padding slot) with get_key_buffer / get_value_buffer / set_kv_buffer."""
from __future__ import annotations

import torch


class ReqToTokenPool:
    def __init__(self, size: int, max_context_len: int):
        self.size = size
        self.req_to_token = torch.zeros(size + 1, max_context_len, dtype=torch.int32)
        self.free_slots = list(range(1, size + 1))


class MHATokenToKVPool:
    def __init__(self, size: int, dtype, head_num: int, head_dim: int, layer_num: int):
        self.k_buffer = [torch.zeros(size + 1, head_num, head_dim, dtype=dtype) for _ in range(layer_num)]
        self.v_buffer = [torch.zeros(size + 1, head_num, head_dim, dtype=dtype) for _ in range(layer_num)]
        self.free_slots = list(range(1, size + 1))
        self.layer_num = layer_num

    def get_key_buffer(self, layer_id):
        return self.k_buffer[layer_id]

    def get_value_buffer(self, layer_id):
        return self.v_buffer[layer_id]

    def set_kv_buffer(self, layer, loc, cache_k, cache_v, k_scale=None, v_scale=None):
        self.k_buffer[layer.layer_id][loc.long()] = cache_k.to(self.k_buffer[layer.layer_id].dtype)
        self.v_buffer[layer.layer_id][loc.long()] = cache_v.to(self.v_buffer[layer.layer_id].dtype)
