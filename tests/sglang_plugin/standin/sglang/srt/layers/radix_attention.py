"""Stand-in of sglang.srt.layers.radix_attention.RadixAttention with its documented semantics:

forward(q, k, v, forward_batch, save_kv_cache=True): when k/v are given and save_kv_cache, write them
into the forward context's token_to_kv_pool for this layer_id at forward_batch.out_cache_loc; then each request's
new queries (positions prefix..seq_len-1) attend its keys req_to_token[req_pool_idx, :seq_len] causally,
GQA, scale ``scaling``; with sliding_window_size >= 0 a query at t sees keys t-sliding_window_size..t
(SGLang's exclusive count: size + 1 keys). q [T, H*D] in, [T, H*D] out.
"""
from __future__ import annotations

import torch
from torch import nn

from sglang.srt.model_executor.forward_context import get_req_to_token_pool, get_token_to_kv_pool


class RadixAttention(nn.Module):
    def __init__(self, num_heads, head_dim, scaling, num_kv_heads, layer_id, logit_cap=0.0, v_head_dim=-1,
                 sliding_window_size=-1, is_cross_attention=False, quant_config=None, prefix="", **kwargs):
        super().__init__()
        self.tp_q_head_num, self.tp_k_head_num, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scaling, self.layer_id = scaling, layer_id
        self.sliding_window_size = sliding_window_size or -1
        self.k_scale = self.v_scale = None

    def forward(self, q, k, v, forward_batch, save_kv_cache=True, **kwargs):
        pool = get_token_to_kv_pool()
        if k is not None and save_kv_cache:
            pool.set_kv_buffer(self, forward_batch.out_cache_loc, k.view(-1, self.tp_k_head_num, self.head_dim),
                               v.view(-1, self.tp_k_head_num, self.head_dim), self.k_scale, self.v_scale)
        k_buf, v_buf = pool.get_key_buffer(self.layer_id), pool.get_value_buffer(self.layer_id)
        q = q.view(-1, self.tp_q_head_num, self.head_dim)
        if forward_batch.forward_mode.is_decode():
            new_lens = [1] * forward_batch.batch_size
        else:
            new_lens = forward_batch.extend_seq_lens_cpu
        out, offset = [], 0
        rep = self.tp_q_head_num // self.tp_k_head_num
        ct = torch.float64 if q.dtype == torch.float64 else torch.float32  # SGLang's kernels: fp32 softmax
        for i, n in enumerate(new_lens):
            seq_len = int(forward_batch.seq_lens[i])
            locs = get_req_to_token_pool().req_to_token[forward_batch.req_pool_indices[i], :seq_len].long()
            keys = k_buf[locs].to(ct).repeat_interleave(rep, 1)
            values = v_buf[locs].to(ct).repeat_interleave(rep, 1)
            qi = q[offset: offset + n].to(ct)
            q_pos = torch.arange(seq_len - n, seq_len)[:, None]
            k_pos = torch.arange(seq_len)[None, :]
            visible = k_pos <= q_pos
            if self.sliding_window_size >= 0:
                visible &= q_pos - k_pos <= self.sliding_window_size
            scores = torch.einsum("qhd,khd->hqk", qi, keys) * self.scaling
            probs = scores.masked_fill(~visible[None], float("-inf")).softmax(-1)
            out.append(torch.einsum("hqk,khd->qhd", probs, values).to(q.dtype))
            offset += n
        return torch.cat(out).reshape(-1, self.tp_q_head_num * self.head_dim)
