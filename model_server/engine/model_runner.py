"""Tensors on the device: the cache pools, the prefill and decode forwards, CUDA graphs for decode.

The runner reuses the PLT model's modules (same weights, same per-layer maths: norms, projections,
RoPE, gate, MLP) and replaces its attention bookkeeping with engine-owned pools:

| pool | shape | indexed by |
|---|---|---|
| loop-0 K/V | [L, blocks + 1, block_size, G, D] | a request's block table (paged) |
| rings | [L, slots + 1, R-1, window, G, D] | a request's slot; position p at p % window |
| carry | [max(R-1, 1), slots + 1, d] | a request's slot |

The extra block and slot are scratch space for the padding rows of captured CUDA graphs.

Decode modes: ``fused`` runs all R loops of each new token as R rows of one pass (plt_spec.md 4.1):
weights are read once per token. ``sequential`` runs one pass per loop, like the authors' vLLM fork;
it is the baseline the benchmark compares against and the only schedule IQuest v1 allows (its loop r
needs loop r-1 at the same position).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels import add_rms_norm, gswa_decode, gswa_prefill, rope_qkv_write, silu_mul
from ..plt.configuration import LoopSpec
from ..plt.modeling import apply_rope
from ..plt.plt_math import clp_input, gate_mix, local_plan, ring_attention, ring_entry_valid, shift_packed
from .config import EngineConfig
from .loop_state import LoopState
from .scheduler import PrefillChunk
from .sequence import Sequence


def _fuse(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Concatenate parameters along dim 0 and make each one a view of its rows of the result."""
    fused = torch.cat([p.data for p in params])
    offset = 0
    for p in params:
        p.data = fused[offset: offset + p.shape[0]]
        offset += p.shape[0]
    return fused


@dataclass
class _Resident:
    """The batch whose decode inputs are in the graphs' static buffers, as of the last replay."""
    seqs: list[Sequence]
    pos: list[int]  # position of each row's last input token
    tables: list[list[int]]  # the block-table lists themselves (identity, see _advance_resident)
    lengths: list[int]  # table entries already on the device
    last: list[int | None]  # last entry already on the device
    slots: list[int]


class ModelRunner:
    def __init__(self, model, cfg: EngineConfig, spec: LoopSpec, num_blocks: int):
        self.model = model
        self.inner = model.model
        config = model.config
        self.spec = spec
        self.cfg = cfg
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.hidden = config.hidden_size
        self.scale = self.head_dim ** -0.5
        self.block_size = cfg.block_size
        self.max_blocks_per_seq = -(-cfg.max_model_len // cfg.block_size)
        self.dummy_block, self.dummy_slot = num_blocks, cfg.max_num_seqs
        kv = (self.num_layers, num_blocks + 1, cfg.block_size, self.num_kv_heads, self.head_dim)
        self.k_pool = torch.zeros(kv, dtype=self.dtype, device=self.device)
        self.v_pool = torch.zeros(kv, dtype=self.dtype, device=self.device)
        rings = spec.num_loops - 1  # zero for R = 1: no ring or carry memory at all
        ring = (self.num_layers, cfg.max_num_seqs + 1, rings, spec.window, self.num_kv_heads, self.head_dim)
        self.ring_k = torch.zeros(ring, dtype=self.dtype, device=self.device)
        self.ring_v = torch.zeros(ring, dtype=self.dtype, device=self.device)
        self.carry = torch.zeros(rings, cfg.max_num_seqs + 1, self.hidden, dtype=self.dtype, device=self.device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._static: dict[str, torch.Tensor] = {}
        self._static_sizes: list[int] = []
        self._resident: _Resident | None = None  # what the graphs' static inputs hold (decode())
        self.resident_steps = 0  # decode steps that advanced the resident inputs instead of uploading
        self.table_entries_uploaded = 0  # block-table entries sent to the device for decode steps
        self.qkv_weight, self.qkv_bias, self.gate_up_weight = self._fuse_projections()

    def resize_kv(self, num_blocks: int) -> None:
        """Reallocate the loop-0 K/V pool with ``num_blocks`` blocks (after the memory profile; before any
        request or graph capture)."""
        shape = (self.k_pool.shape[0], num_blocks + 1) + tuple(self.k_pool.shape[2:])
        self.k_pool = self.v_pool = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.k_pool = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_pool = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.dummy_block = num_blocks

    def _fuse_projections(self):
        """One [q; k; v] and one [gate; up] matrix per layer: one GEMM instead of three (two) per pass.

        The model's own q/k/v and gate/up weights become views into the fused storage, so memory does
        not grow and the model object keeps working (the engine and model.generate() share weights).
        """
        qkv_w, qkv_b, gate_up = [], [], []
        for layer in self.inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            parts = [attn.q_proj, attn.k_proj, attn.v_proj]
            qkv_w.append(_fuse([p.weight for p in parts]))
            qkv_b.append(_fuse([p.bias for p in parts]) if attn.q_proj.bias is not None else None)
            gate_up.append(_fuse([mlp.gate_proj.weight, mlp.up_proj.weight]))
        return qkv_w, qkv_b, gate_up

    # -- small helpers -------------------------------------------------------------------------------
    def _gate(self, layer: int):
        return self.inner._gate(layer)

    def _norm(self, module, x):
        # On CUDA one fused kernel instead of six small ones (a decode step is launch-bound at small
        # batch); on CPU the model's own module, so CPU results equal model.generate() exactly.
        # (kernels.add_rms_norm: PLTRMSNorm's roundings; torch's rms_norm measured ~7-9 us per call for the
        # few rows of a decode step on the H200, this kernel ~2-3 us.)
        if x.is_cuda:
            return add_rms_norm(x.contiguous(), None, module.weight, module.eps)[0]
        return module(x)

    def _qkv(self, layer, x, cos, sin):
        """x [N, T, d] -> q [N, H, T, D], k and v [N, G, T, D], RoPE applied."""
        n, t, _ = x.shape
        h, g, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = F.linear(x, self.qkv_weight[layer], self.qkv_bias[layer])
        q, k, v = qkv.split([h * d, g * d, g * d], dim=-1)
        q = q.view(n, t, h, d).transpose(1, 2)
        k = k.view(n, t, g, d).transpose(1, 2)
        v = v.view(n, t, g, d).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _input_norm(self, layer, h):
        return self._norm(self.inner.layers[layer].input_layernorm, h)

    def _finish_layer(self, layer, residual, attn_out):
        lay = self.inner.layers[layer]
        h = residual + lay.self_attn.o_proj(attn_out)
        gate, up = F.linear(self._norm(lay.post_attention_layernorm, h), self.gate_up_weight[layer]).chunk(2, -1)
        return h + lay.mlp.down_proj(F.silu(gate) * up)

    def _loop_output(self, h):
        return self._norm(self.inner.norm, h) if self.spec.normalize_per_loop else h

    def _logits(self, h):
        return self.model.lm_head(self._norm(self.inner.norm, h)).float()

    def kv_bytes_per_token(self) -> int:
        """Loop-0 K/V bytes one more token of context costs, from the allocated pool."""
        tokens = self.k_pool.shape[1] * self.k_pool.shape[2]
        return (self.k_pool.numel() + self.v_pool.numel()) * self.k_pool.element_size() // tokens

    def per_request_bytes(self) -> int:
        """Fixed bytes per running request (rings of loops >= 1 plus the carry), from the allocated pools."""
        total = self.ring_k.numel() + self.ring_v.numel() + self.carry.numel()
        return total * self.k_pool.element_size() // self.carry.shape[1]

    def reset_slot(self, slot: int) -> None:
        """A new request starts with a zero carry (H^{r-1}_{-1} = 0)."""
        self.carry[:, slot].zero_()

    def save_slot(self, slot: int) -> LoopState:
        """A copy of a slot's rings and carry (a prompt just ended there, loop_state.py)."""
        return LoopState(self.ring_k[:, slot].clone(), self.ring_v[:, slot].clone(), self.carry[:, slot].clone())

    def restore_slot(self, slot: int, state: LoopState) -> None:
        """A slot resumes at a snapshot's position (before its chunk's prefill; eager, outside any graph)."""
        self.ring_k[:, slot] = state.ring_k
        self.ring_v[:, slot] = state.ring_v
        self.carry[:, slot] = state.carry

    def copy_cache(self, src_slot: int, dst_slot: int, blocks: tuple[int, int] | None) -> None:
        """A forked request's cache (n > 1): the parent's rings and carry, and its partly filled last
        loop-0 block (the full blocks are shared, see block_manager.py). Eager, outside any graph."""
        self.ring_k[:, dst_slot] = self.ring_k[:, src_slot]
        self.ring_v[:, dst_slot] = self.ring_v[:, src_slot]
        self.carry[:, dst_slot] = self.carry[:, src_slot]
        if blocks is not None:
            src, dst = blocks
            self.k_pool[:, dst] = self.k_pool[:, src]
            self.v_pool[:, dst] = self.v_pool[:, src]

    def _flat_slots(self, block_table: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Index into k_pool[layer].view(-1, G, D) of each position, through the block table."""
        return block_table[positions // self.block_size] * self.block_size + positions % self.block_size

    # -- prefill ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, chunks: list[PrefillChunk]) -> torch.Tensor:
        """Run chunks of prompts through all loops (loops one after another, each over all tokens).
        Returns the last-loop logits at the last token of every chunk, [len(chunks), V]."""
        dev, spec, window = self.device, self.spec, self.spec.window
        ids, pos, global_index, write_index = [], [], [], []
        write_rows = []  # packed token rows whose loop-0 K/V is written (not those of a cached prefix)
        cu_q, cu_k = [0], [0]
        n_tok = sum(c.length for c in chunks)
        for c in chunks:
            seq = c.seq
            table = torch.tensor(seq.block_table, dtype=torch.long)
            ids.append(torch.tensor(seq.token_ids[c.start: c.start + c.length]))
            pos.append(torch.arange(c.start, c.start + c.length))
            global_index.append(self._flat_slots(table, torch.arange(c.start + c.length)))
            skip = max(0, min(c.write_from - c.start, c.length))  # cached loop-0 K/V: read, not written
            write_index.append(global_index[-1][c.start + skip:])  # the chunk's own positions
            write_rows.append(cu_q[-1] + torch.arange(skip, c.length))
            cu_q.append(cu_q[-1] + c.length)
            cu_k.append(cu_k[-1] + c.start + c.length)
        plan = local_plan([c.start for c in chunks], [c.length for c in chunks], [c.seq.slot for c in chunks],
                          window, [c.fresh for c in chunks]).to(dev)

        def cat(parts):
            return torch.cat(parts).to(dev)

        ids, pos, global_index, write_index = cat(ids), cat(pos), cat(global_index), cat(write_index)
        write_rows = None if len(write_index) == n_tok else cat(write_rows)
        cu_q_t, cu_k_t = (torch.tensor(x, dtype=torch.int32, device=dev) for x in (cu_q, cu_k))
        max_q, max_k = max(c.length for c in chunks), max(c.start + c.length for c in chunks)
        slots = torch.tensor([c.seq.slot for c in chunks], device=dev)
        first, last = cu_q_t[:-1].long(), cu_q_t[1:].long() - 1

        embeds = self.inner.embed_tokens(ids)[None]  # [1, N, d]
        cos, sin = self.inner.rotary_emb(pos[None], embeds.dtype)
        old_carry = self.carry[:, slots].clone()
        g, d = self.num_kv_heads, self.head_dim
        loop_out = h = None
        for r in range(spec.num_loops):
            if r == 0:
                h = embeds
            elif spec.clp:
                shifted = shift_packed(loop_out[0], first, old_carry[r - 1])[None]
                h = clp_input(spec.emb_scale, spec.hidden_scale, embeds, shifted)
            else:
                h = loop_out
            for layer in range(self.num_layers):
                x = self._input_norm(layer, h)
                q, k, v = self._qkv(layer, x, cos, sin)  # [1, H|G, N, D]
                qp, kp, vp = q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1)
                k_flat, v_flat = self.k_pool[layer].view(-1, g, d), self.v_pool[layer].view(-1, g, d)
                if r == 0:
                    k_flat[write_index] = kp if write_rows is None else kp[write_rows]
                    v_flat[write_index] = vp if write_rows is None else vp[write_rows]
                local = {}
                if r > 0:
                    rk, rv = self.ring_k[layer][:, r - 1], self.ring_v[layer][:, r - 1]
                    lk, lv = plan.gather(rk, kp), plan.gather(rv, vp)
                    plan.write(rk, kp)
                    plan.write(rv, vp)
                    gate = self._gate(layer)(h, q)[0, :, :, 0].transpose(0, 1)  # [N, H]
                    local = dict(k_loc=lk, v_loc=lv, cu_seqlens_kl=plan.cu_seqlens_kl, gate=gate, window=window)
                out = gswa_prefill(qp, k_flat[global_index], v_flat[global_index], cu_q_t, cu_k_t, max_q, max_k,
                                   scale=self.scale, **local)
                h = self._finish_layer(layer, h, out.reshape(1, n_tok, -1))
            if r < spec.num_loops - 1:
                loop_out = self._loop_output(h) if spec.clp else h
                if spec.clp:
                    self.carry[r, slots] = loop_out[0, last]
        return self._logits(h[0, last])

    # -- decode -----------------------------------------------------------------------------------------
    def _pinned(self, values, dtype=torch.int64) -> torch.Tensor:
        """Host values on the device without waiting for the work queued there (pinned, non-blocking)."""
        host = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
        if self.device.type != "cuda":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    def _decode_inputs(self, seqs: list[Sequence], ids: torch.Tensor | None = None):
        """Inputs of an eager decode step (a batch beyond the captured graphs): ids (from ``ids`` on the
        device, else the sequences' last tokens), positions, slots and block tables. The tables keep the
        full width (the decode kernel picks its context split from it) but only the columns the batch uses
        are sent."""
        meta = [[s.next_position for s in seqs], [s.slot for s in seqs]]
        if ids is None:
            meta.append([s.last_token for s in seqs])
        meta = self._pinned(meta)
        width = max(1, max(len(s.block_table) for s in seqs))
        dense = torch.full((len(seqs), width), self.dummy_block, dtype=torch.int32)
        for i, s in enumerate(seqs):
            dense[i, : len(s.block_table)] = torch.tensor(s.block_table, dtype=torch.int32)
        tables = torch.full((len(seqs), self.max_blocks_per_seq), self.dummy_block, dtype=torch.int32,
                            device=self.device)
        tables[:, :width] = self._pinned(dense)
        self.table_entries_uploaded += dense.numel()
        return meta[2] if ids is None else ids, meta[0], meta[1], tables

    @torch.no_grad()
    def decode(self, seqs: list[Sequence], ids: torch.Tensor | None = None) -> torch.Tensor:
        """One new token for each sequence, at its ``next_position``; returns last-loop logits [B, V].

        ``ids``: the input tokens already on the device, [B] in the order of ``seqs`` (the previous decode
        step's sampled tokens: with async scheduling the host has not read them yet); None: the sequences'
        last tokens, from the host.

        With CUDA graphs the inputs stay on the device between steps: when the batch is the one of the
        previous decode step, one position further, and ``ids`` is given, only the ids (one device copy),
        the position counter (one add) and any new block-table entries are written; otherwise the inputs
        are uploaded, the block tables by what changed (``_upload``)."""
        batch = len(seqs)
        size = next((n for n in self._static_sizes if n >= batch), None)
        if size is None:
            self._resident = None
            return self._decode_step(*self._decode_inputs(seqs, ids))
        if ids is None or not self._advance_resident(seqs):
            self._upload(seqs, size, ids)
        else:
            self._static["ids"][:batch].copy_(ids)
        if size in self.graphs:
            graph, logits = self.graphs[size]
            graph.replay()
        else:  # static inputs without a graph (CPU tests of the resident-input bookkeeping)
            st = self._static
            logits = self._decode_step(st["ids"][:size], st["pos"][:size], st["slots"][:size], st["tables"][:size])
        return logits[:batch]

    def use_static_inputs(self, sizes) -> None:
        """Keep decode inputs in static buffers for batches up to max(sizes) (padded to the next size).
        capture_graphs() does this for its graphs; on CPU it runs the same bookkeeping eagerly."""
        self._static_sizes = sizes = sorted({min(n, self.cfg.max_num_seqs) for n in sizes})
        self._resident = None
        if not sizes:
            return
        top, dev = sizes[-1], self.device
        self._static = {
            "ids": torch.zeros(top, dtype=torch.long, device=dev),
            "pos": torch.zeros(top, dtype=torch.long, device=dev),
            "slots": torch.full((top,), self.dummy_slot, dtype=torch.long, device=dev),
            "tables": torch.full((top, self.max_blocks_per_seq), self.dummy_block, dtype=torch.int32, device=dev),
        }

    def _upload(self, seqs: list[Sequence], size: int, ids: torch.Tensor | None) -> None:
        """Write a new batch into the static inputs. Ids, positions and slots go up whole (3 x B values);
        block-table rows are not rebuilt max_blocks_per_seq wide: a request that was already resident keeps
        its row (moved on the device if its row index changed) plus the entries appended since, and only a
        request new to the batch sends its table, as wide as it is. Entries beyond a request's own table
        are never read (the kernels read the blocks of positions < its length), so they are left as they are."""
        batch, st, res = len(seqs), self._static, self._resident
        meta = [[s.next_position for s in seqs], [s.slot for s in seqs]]
        if ids is None:
            meta.append([s.last_token for s in seqs])
        meta = self._pinned(meta)
        st["pos"][:batch], st["slots"][:batch] = meta[0], meta[1]
        st["ids"][:batch] = meta[2] if ids is None else ids
        row_of = {id(s): j for j, s in enumerate(res.seqs)} if res is not None else {}
        moves, entries, fresh = [], [], []
        for i, s in enumerate(seqs):
            table, j = s.block_table, row_of.get(id(s))
            if j is not None and table is res.tables[j] and len(table) >= res.lengths[j] and (
                    res.lengths[j] == 0 or table[res.lengths[j] - 1] == res.last[j]):
                if j != i:
                    moves.append((i, j, res.lengths[j]))
                entries += [(i, c, table[c]) for c in range(res.lengths[j], len(table))]
            elif table:
                fresh.append(i)
        tables = st["tables"]
        if moves:  # rows of requests already resident, gathered on the device (no upload)
            width = max(n for _, _, n in moves)
            index = self._pinned([[i for i, _, _ in moves], [j for _, j, _ in moves]])
            tables[index[0], :width] = tables[index[1], :width]  # the gather copies before it writes
        if fresh:  # whole tables of requests new to the batch: one dense upload [len(fresh), widest]
            width = max(len(seqs[i].block_table) for i in fresh)
            dense = torch.full((len(fresh), width), self.dummy_block, dtype=torch.int32)
            for n, i in enumerate(fresh):
                dense[n, : len(seqs[i].block_table)] = torch.tensor(seqs[i].block_table, dtype=torch.int32)
            rows = self._pinned(fresh)
            tables[rows, :width] = self._pinned(dense)
            self.table_entries_uploaded += dense.numel()
        if entries:
            self._write_entries(entries)
        # padding rows (after the moves: a row below may be a moved row's source): position 0 of the
        # scratch slot and block; a row of length 1 reads only its first table entry
        st["ids"][batch:size] = 0
        st["pos"][batch:size] = 0
        st["slots"][batch:size] = self.dummy_slot
        tables[batch:size, 0] = self.dummy_block
        self._resident = _Resident(list(seqs), [s.next_position for s in seqs],
                                   [s.block_table for s in seqs], [len(s.block_table) for s in seqs],
                                   [s.block_table[-1] if s.block_table else None for s in seqs],
                                   [s.slot for s in seqs])

    def _write_entries(self, entries: list[tuple[int, int, int]]) -> None:
        """Block-table entries (row, column, block) into the static tables: one upload, one scatter."""
        rows, cols, vals = self._pinned(entries).T
        self._static["tables"][rows, cols] = vals.to(torch.int32)
        self.table_entries_uploaded += len(entries)

    def _advance_resident(self, seqs: list[Sequence]) -> bool:
        """Move the device-resident inputs one position on, if they still describe ``seqs``."""
        res = self._resident
        if res is None or len(seqs) != len(res.seqs) or any(a is not b for a, b in zip(seqs, res.seqs)):
            return False
        if any(s.next_position - 1 != p for s, p in zip(seqs, res.pos)) or [s.slot for s in seqs] != res.slots:
            return False
        new_entries = []
        for i, s in enumerate(seqs):
            # Block tables only grow by appending while a sequence runs; a released one is a new list.
            table, n = s.block_table, res.lengths[i]
            if table is not res.tables[i] or len(table) < n or (n and table[n - 1] != res.last[i]):
                return False
            if len(table) > n:
                new_entries += [(i, j, table[j]) for j in range(n, len(table))]
        self._static["pos"][: len(seqs)] += 1
        if new_entries:
            self._write_entries(new_entries)
            for i, s in enumerate(seqs):
                res.lengths[i], res.last[i] = len(s.block_table), s.block_table[-1]
        res.pos = [p + 1 for p in res.pos]
        self.resident_steps += 1
        return True

    def _decode_step(self, ids, pos, slots, tables):
        if self.cfg.decode_mode == "fused" and self.spec.clp and self.spec.num_loops > 1:
            return self._decode_fused(ids, pos, slots, tables)
        return self._decode_sequential(ids, pos, slots, tables)

    def _new_token_slots(self, pos, tables):
        """Flat pool index of each request's new position (computed once per step, used per layer)."""
        return tables.gather(1, (pos // self.block_size)[:, None])[:, 0].long() * self.block_size + pos % self.block_size

    def _layer_head(self, layer, h, pending):
        """Start of a decode layer: h += the previous layer's MLP output (``pending``, None at layer 0),
        then the input norm; on CUDA one launch (kernels.add_rms_norm). Returns (normed, h)."""
        norm = self.inner.layers[layer].input_layernorm
        if h.is_cuda:
            return add_rms_norm(h if pending is None else pending, None if pending is None else h, norm.weight,
                                norm.eps)
        h = h if pending is None else h + pending
        return norm(h), h

    def _layer_tail(self, layer, h, attn_out):
        """Rest of a decode layer after attention: o_proj, residual add + post-attention norm (one launch on
        CUDA), gate/up GEMM, SiLU * up (one launch on CUDA), down GEMM. Returns (h, MLP output); the caller
        adds the MLP output in the next layer's head (or after the last layer)."""
        lay = self.inner.layers[layer]
        o = lay.self_attn.o_proj(attn_out)
        norm = lay.post_attention_layernorm
        if h.is_cuda:
            x, h = add_rms_norm(o, h, norm.weight, norm.eps)
            act = silu_mul(F.linear(x, self.gate_up_weight[layer]))
        else:
            h = h + o
            gate, up = F.linear(norm(h), self.gate_up_weight[layer]).chunk(2, -1)
            act = F.silu(gate) * up
        return h, lay.mlp.down_proj(act)

    def _rope_write(self, layer, x, cos, sin, pool_index, ring_index=None):
        """Projections of decode rows x [N, 1, d], RoPE, and K/V written where the indices say (one launch
        on CUDA: kernels.rope_qkv_write). Returns q [N, H, D]."""
        qkv = F.linear(x, self.qkv_weight[layer], self.qkv_bias[layer])
        rings = (self.ring_k[layer], self.ring_v[layer], ring_index) if ring_index is not None else (None,) * 3
        return rope_qkv_write(qkv.view(x.shape[0], -1), cos, sin, self.num_heads, self.num_kv_heads,
                              self.head_dim, self.k_pool[layer], self.v_pool[layer], pool_index, *rings)

    def _ring_index(self, slots, ring_pos, loop):
        """Flat index of each request's new ring entry of ``loop`` (>= 1) in ring_k[layer].view(-1, G, D)."""
        return (slots * (self.spec.num_loops - 1) + loop - 1) * self.spec.window + ring_pos

    def _row_gates(self, layer, h, q, batch, rows):
        """Gates of loop rows 1..R-1: [B, R-1, H]. On CUDA in hidden mode one norm, one projection and one
        sigmoid for all those rows; otherwise the model's own gate module row by row."""
        gate = self._gate(layer)
        if h.is_cuda and gate.from_hidden:
            g = torch.sigmoid(F.linear(self._norm(gate.gate_norm, h[batch:]), gate.weight, gate.bias))
            return g.view(rows - 1, batch, -1).transpose(0, 1).contiguous()
        return torch.stack([gate(h[r * batch:(r + 1) * batch], q[r * batch:(r + 1) * batch, :, None])[:, :, 0, 0]
                            for r in range(1, rows)], 1)

    def _decode_fused(self, ids, pos, slots, tables):
        spec, rows = self.spec, self.spec.num_loops
        batch = ids.shape[0]
        embeds = self.inner.embed_tokens(ids)[:, None]  # [B, 1, d]
        carry = self.carry[:, slots]  # [R-1, B, d]
        h = torch.cat([embeds] + [clp_input(spec.emb_scale, spec.hidden_scale, embeds, carry[r - 1][:, None])
                                  for r in range(1, rows)])  # [R*B, 1, d]
        cos, sin = self.inner.rotary_emb(pos[:, None], embeds.dtype)  # [B, 1, D]: row r*B+b uses row b
        seq_lens = (pos + 1).to(torch.int32)
        ring_pos = pos % spec.window
        slots32 = slots.to(torch.int32)
        flat = self._new_token_slots(pos, tables)
        nowhere = torch.full_like(flat, -1)
        pool_index = torch.cat([flat] + [nowhere] * (rows - 1))  # row 0 writes loop-0 K/V into the pool
        ring_index = torch.cat([nowhere] + [self._ring_index(slots, ring_pos, r) for r in range(1, rows)])
        pending = None
        for layer in range(self.num_layers):
            x, h = self._layer_head(layer, h, pending)
            q = self._rope_write(layer, x, cos, sin, pool_index, ring_index)  # [R*B, H, D]
            gates = self._row_gates(layer, h, q, batch, rows)
            rows_q = q.view(rows, batch, self.num_heads, self.head_dim).transpose(0, 1)
            out = gswa_decode(rows_q, self.k_pool[layer], self.v_pool[layer], tables, seq_lens,
                              self.ring_k[layer], self.ring_v[layer], slots32, gates,
                              scale=self.scale)  # [B, R, H, D]
            h, pending = self._layer_tail(layer, h, out.transpose(0, 1).reshape(rows * batch, 1, -1))
        h = (h + pending).view(rows, batch, self.hidden)
        self.carry[:, slots] = self._loop_output(h[:-1])
        return self._logits(h[-1])

    def _decode_sequential(self, ids, pos, slots, tables):
        spec = self.spec
        embeds = self.inner.embed_tokens(ids)[:, None]
        cos, sin = self.inner.rotary_emb(pos[:, None], embeds.dtype)
        seq_lens = (pos + 1).to(torch.int32)
        ring_pos = pos % spec.window
        flat = self._new_token_slots(pos, tables)
        nowhere = torch.full_like(flat, -1)
        ring_valid = ring_entry_valid(pos, spec.window)
        old_carry = self.carry[:, slots].clone()
        loop_out, outs = None, []
        for r in range(spec.num_loops):
            if r == 0:
                h = embeds
            elif spec.clp:
                h = clp_input(spec.emb_scale, spec.hidden_scale, embeds, old_carry[r - 1][:, None])
            else:
                h = loop_out
            ring_index = self._ring_index(slots, ring_pos, r) if r > 0 else None
            pending = None
            for layer in range(self.num_layers):
                x, h = self._layer_head(layer, h, pending)
                # loop 0 writes its K/V into the pool, loop r >= 1 into its ring
                q = self._rope_write(layer, x, cos, sin, flat if r == 0 else nowhere, ring_index)  # [B, H, D]
                out = gswa_decode(q[:, None], self.k_pool[layer], self.v_pool[layer], tables, seq_lens,
                                  None, None, None, None, scale=self.scale)[:, 0]  # [B, H, D]
                if r > 0:
                    rk, rv = self.ring_k[layer][:, r - 1], self.ring_v[layer][:, r - 1]
                    local = ring_attention(q, rk[slots], rv[slots], ring_valid, self.scale)
                    g = self._gate(layer)(h, q[:, :, None])[:, :, 0]  # [B, H, 1]
                    out = gate_mix(g, out, local)
                h, pending = self._layer_tail(layer, h, out.reshape(out.shape[0], 1, -1))
            h = h + pending
            if r < spec.num_loops - 1:
                loop_out = self._loop_output(h) if spec.clp else h
                outs.append(loop_out[:, 0])
        if spec.clp and outs:
            self.carry[:, slots] = torch.stack(outs)
        return self._logits(h[:, 0])

    # -- CUDA graphs ------------------------------------------------------------------------------------
    @torch.no_grad()
    def capture_graphs(self) -> None:
        """Capture one decode graph per batch size (<= max_num_seqs) on static input buffers."""
        if self.device.type != "cuda":
            return
        self.use_static_inputs(self.cfg.graph_batch_sizes)
        sizes, st = self._static_sizes, self._static
        pool = None
        for size in reversed(sizes):  # largest first so smaller graphs reuse its memory pool
            args = (st["ids"][:size], st["pos"][:size], st["slots"][:size], st["tables"][:size])
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up: Triton compiles, cuBLAS picks kernels
                    self._decode_step(*args)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits = self._decode_step(*args)
            pool = graph.pool()
            self.graphs[size] = (graph, logits)
        self._resident = None
        torch.cuda.synchronize()
