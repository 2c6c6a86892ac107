"""Triton decode attention for PLT: all R loop rows of every request in ONE launch.

Every loop's query of a token attends to the same loop-0 K/V, so for one (request, KV head) the kernel stacks
the group's H/G query heads of all R loop rows into one tile of BLOCK_M >= R*H/G rows: each loop-0 K/V tile
is loaded once and used by every row (one tensor-core dot per tile, whatever R is). Rows r>=1 also attend to
their ring of the last W positions and are mixed with the gate.

Grid: (B * G, parts). Long contexts are split over `num_splits` programs (flash-decoding; each takes an equal
share of the request's actual length, at least min_keys_per_split keys, so trailing splits may be empty); with
R>1 one extra program per (request, KV head) does the local ring attention in parallel, and only the global
branch is split. Each non-empty program writes its partial softmax state (max, sum, unnormalised output) to a
workspace, then takes a ticket from a per-(request, KV head) counter; the program that draws the last ticket
merges the non-empty partials, applies the gate and writes the output, and resets the counter for the next
launch. So the whole step is one launch, with no second reduce kernel.
The counters live in a cached per-device buffer: launches that share it must be stream-ordered (one stream,
or graph replays on one stream), and the first call on a device must not happen inside CUDA graph capture.

Semantics and layout: reference.gswa_decode_reference and docs/kernels.md.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _interpreter_compat
from ._common import _NEG, LOG2E, _online_update
from .reference import _check_gqa

_interpreter_compat.apply()

MIN_KEYS_PER_SPLIT = 256  # fewest keys per split (by capacity when choosing splits, by actual length in the kernel)
PROGRAMS_PER_SM = 2  # split programs per SM the heuristic aims at when the batch alone does not fill the GPU
# Key tile and pipeline depth on the GPU, by grid size (H200 sweeps, benchmarks/results/attention-h200-splitkv
# -run1.json and attention-h200-splitkv.json, "decode_sweep"):
# - up to 3 programs per SM: 64-key tiles, 3 stages (2 tiles = 64 KB in flight per program; 72 KB of shared
#   memory and ~166 registers, so 3 programs fit per SM). Faster than 32-key tiles / 4 stages at B=1 4K
#   (16.3 vs 17.2 us), B=1 32K (50.3 vs 55.6), B=32 4K (130 vs 151).
# - larger grids: 32-key tiles, 4 stages (3 tiles = 48 KB in flight; 54 KB and <= 128 registers for R = 1
#   and 2, so 4 programs fit per SM): B=64 4K R=1 255 us, R=2 271 us, against 330 / 358 with 64 / 3.
WIDE_GRID_PER_SM = 3
NARROW_CFG = (64, 3)  # (block_n, num_stages)
WIDE_CFG = (32, 4)


@triton.jit
def _global_part(q, KC, VC, BT, b, kvh, n_lo, n_hi, page_size, qk_scale,
                 s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_btb,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                 PAGED: tl.constexpr, DOT_F32: tl.constexpr):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    m_i = tl.full([BLOCK_M], _NEG, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if PAGED:
        # The block-table entries of a tile are loaded one iteration ahead, into registers carried by the
        # loop: Triton's pipeliner then sees K/V addresses that depend on no load of their own iteration and
        # keeps num_stages - 1 K/V tiles in flight. Loaded in the same iteration (a load feeding a load), it
        # spends a stage on the table and gets one K/V buffer whatever num_stages is: one 64-key tile in
        # flight per program, ~20 GB/s per program on the H100/H200 (the AOT test checks the buffer count).
        nxt = n_lo + offs_n
        pg_next = tl.load(BT + b * s_btb + nxt // page_size, mask=nxt < n_hi, other=0)
    for n0 in range(n_lo, n_hi, BLOCK_N):
        offs = n0 + offs_n
        ok = offs < n_hi
        if PAGED:
            page = pg_next.to(tl.int64)
            nxt = offs + BLOCK_N
            pg_next = tl.load(BT + b * s_btb + nxt // page_size, mask=nxt < n_hi, other=0)
            tok = (offs % page_size).to(tl.int64)
        else:
            page = b.to(tl.int64)
            tok = offs.to(tl.int64)
        k = tl.load(KC + (page * s_kb + tok * s_kt + kvh * s_kh)[:, None] + offs_d[None, :], mask=ok[:, None],
                    other=0.0)
        v = tl.load(VC + (page * s_vb + tok * s_vt + kvh * s_vh)[:, None] + offs_d[None, :], mask=ok[:, None],
                    other=0.0)
        m_i, l_i, acc = _online_update(q, k, v, ok[None, :], m_i, l_i, acc, qk_scale, DOT_F32)
    return m_i, l_i, acc


@triton.jit
def _local_part(q, RK, RV, slot, kvh, t, window, row_r, qk_scale,
                s_rks, s_rkr, s_rkw, s_rkh, s_rvs, s_rvr, s_rvw, s_rvh,
                R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                DOT_F32: tl.constexpr):
    # BLOCK_N here is the ring tile (BLOCK_L): small, because this loop loads straight into registers and the
    # kernel's register count (so its occupancy, so the R=2 / R=1 ratio at large batch) is set by its peak
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    m_i = tl.full([BLOCK_M], _NEG, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    p_first = tl.maximum(t - window + 1, 0)
    n_keys = t - p_first + 1
    for rr in tl.static_range(1, R):
        rk = RK + slot * s_rks + (rr - 1) * s_rkr + kvh * s_rkh
        rv = RV + slot * s_rvs + (rr - 1) * s_rvr + kvh * s_rvh
        # not pipelined: a few tiles, and pipeline buffers would cost the whole kernel occupancy
        for j0 in tl.range(0, n_keys, BLOCK_N, num_stages=1):
            offs_j = j0 + offs_n
            ok = offs_j < n_keys
            idx = (tl.where(ok, p_first + offs_j, 0) % window).to(tl.int64)
            k = tl.load(rk + (idx * s_rkw)[:, None] + offs_d[None, :], mask=ok[:, None], other=0.0)
            v = tl.load(rv + (idx * s_rvw)[:, None] + offs_d[None, :], mask=ok[:, None], other=0.0)
            vis = ok[None, :] & (row_r == rr)[:, None]
            m_i, l_i, acc = _online_update(q, k, v, vis, m_i, l_i, acc, qk_scale, DOT_F32)
    return m_i, l_i, acc



@triton.jit
def _store_partial(WS_ACC, WS_ML, ws, m_i, l_i, acc, row_ok, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """One part's softmax state (fp32): running max and sum per row, unnormalised output; padded rows skipped."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    tl.store(WS_ACC + (ws * BLOCK_M + offs_m)[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=row_ok[:, None])
    tl.store(WS_ML + (ws * 2) * BLOCK_M + offs_m, m_i, mask=row_ok)
    tl.store(WS_ML + (ws * 2 + 1) * BLOCK_M + offs_m, l_i, mask=row_ok)


@triton.jit
def _load_partial(WS_ACC, WS_ML, ws, row_ok, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    # .cg: through L2 only; other programs (other SMs) wrote these, so L1 may hold nothing valid
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m_s = tl.load(WS_ML + (ws * 2) * BLOCK_M + offs_m, mask=row_ok, other=_NEG, cache_modifier=".cg")
    l_s = tl.load(WS_ML + (ws * 2 + 1) * BLOCK_M + offs_m, mask=row_ok, other=1.0, cache_modifier=".cg")
    a_s = tl.load(WS_ACC + (ws * BLOCK_M + offs_m)[:, None] * HEAD_DIM + offs_d[None, :], mask=row_ok[:, None],
                  other=0.0, cache_modifier=".cg")
    return m_s, l_s, a_s


@triton.jit(do_not_specialize=["num_splits", "min_tiles"])  # one compile for any split count
def _gswa_decode_kernel(
    Q, KC, VC, BT, SEQ, RK, RV, SLOTS, GATE, O, WS_ACC, WS_ML, CNT,
    qk_scale, window, num_kv_heads, page_size, num_splits, min_tiles,
    s_qb, s_qr, s_qh,
    s_kb, s_kt, s_kh, s_vb, s_vt, s_vh,
    s_btb,
    s_rks, s_rkr, s_rkw, s_rkh, s_rvs, s_rvr, s_rvw, s_rvh,
    s_gb, s_gr, s_gh,
    s_ob, s_or, s_oh,
    R: tl.constexpr, QPG: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
    PAGED: tl.constexpr, HAS_LOCAL: tl.constexpr, SPLIT: tl.constexpr, DOT_F32: tl.constexpr,
):
    bg = tl.program_id(0)
    sid = tl.program_id(1)
    b = bg // num_kv_heads
    kvh = bg % num_kv_heads
    seq_len = tl.load(SEQ + b)
    t = seq_len - 1

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < R * QPG
    row_r = offs_m // QPG  # loop index of the row
    head = kvh * QPG + offs_m % QPG  # query head of the row
    q = tl.load(Q + (b * s_qb + row_r * s_qr + head * s_qh)[:, None] + offs_d[None, :], mask=row_ok[:, None],
                other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    if HAS_LOCAL:
        slot = tl.load(SLOTS + b).to(tl.int64)

    # this program's share of the loop-0 context: whole tiles, split evenly by the actual length, at least
    # min_tiles per split; splits past the last key (n_used..num_splits-1) are empty and only count in
    n_blocks = tl.cdiv(seq_len, BLOCK_N)
    per = tl.maximum(tl.cdiv(n_blocks, num_splits), min_tiles)
    n_used = tl.cdiv(n_blocks, per)
    n_lo = tl.minimum(sid * per * BLOCK_N, seq_len)
    n_hi = tl.minimum(n_lo + per * BLOCK_N, seq_len)

    if SPLIT:
        n_parts = num_splits
        if HAS_LOCAL:
            n_parts = num_splits + 1
        ws = (bg * n_parts + sid).to(tl.int64)
        # publish this program's partial state (rows of real query heads only), then take a ticket
        if sid < n_used:
            m_i, l_i, acc = _global_part(q, KC, VC, BT, b, kvh, n_lo, n_hi, page_size, qk_scale,
                                         s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_btb,
                                         BLOCK_M, BLOCK_N, HEAD_DIM, PAGED, DOT_F32)
            _store_partial(WS_ACC, WS_ML, ws, m_i, l_i, acc, row_ok, BLOCK_M, HEAD_DIM)
        if HAS_LOCAL:
            if sid == num_splits:  # the ring program
                m_l, l_l, acc_l = _local_part(q, RK, RV, slot, kvh, t, window, row_r, qk_scale,
                                              s_rks, s_rkr, s_rkw, s_rkh, s_rvs, s_rvr, s_rvw, s_rvh,
                                              R, BLOCK_M, BLOCK_L, HEAD_DIM, DOT_F32)
                _store_partial(WS_ACC, WS_ML, ws, m_l, l_l, acc_l, row_ok, BLOCK_M, HEAD_DIM)
        tl.debug_barrier()
        ticket = tl.atomic_add(CNT + bg, 1)
        if ticket == n_parts - 1:  # the last ticket merges the non-empty splits (and the ring) and resets
            m_g = tl.full([BLOCK_M], _NEG, tl.float32)
            l_g = tl.zeros([BLOCK_M], tl.float32)
            acc_g = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
            for s in tl.range(0, n_used, num_stages=6):  # pipelined: five partials in flight
                m_s, l_s, a_s = _load_partial(WS_ACC, WS_ML, (bg * n_parts + s).to(tl.int64), row_ok,
                                              BLOCK_M, HEAD_DIM)
                m_new = tl.maximum(m_g, m_s)
                c_old = tl.exp2(m_g - m_new)
                c_new = tl.exp2(m_s - m_new)
                acc_g = acc_g * c_old[:, None] + a_s * c_new[:, None]
                l_g = l_g * c_old + l_s * c_new
                m_g = m_new
            o = acc_g / l_g[:, None]
            if HAS_LOCAL:
                m_l, l_l, a_l = _load_partial(WS_ACC, WS_ML, (bg * n_parts + num_splits).to(tl.int64), row_ok,
                                              BLOCK_M, HEAD_DIM)
                o_loc = a_l / tl.where(l_l == 0.0, 1.0, l_l)[:, None]
                g_ok = row_ok & (row_r >= 1)
                g = tl.load(GATE + b * s_gb + (row_r - 1) * s_gr + head * s_gh, mask=g_ok, other=1.0)
                g = g.to(tl.float32)
                o = g[:, None] * o + (1.0 - g)[:, None] * o_loc
            tl.store(O + (b * s_ob + row_r * s_or + head * s_oh)[:, None] + offs_d[None, :],
                     o.to(O.dtype.element_ty), mask=row_ok[:, None])
            tl.store(CNT + bg, 0)
    else:
        m_i, l_i, acc = _global_part(q, KC, VC, BT, b, kvh, 0, seq_len, page_size, qk_scale,
                                     s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_btb,
                                     BLOCK_M, BLOCK_N, HEAD_DIM, PAGED, DOT_F32)
        o = acc / l_i[:, None]
        if HAS_LOCAL:
            m_l, l_l, acc_l = _local_part(q, RK, RV, slot, kvh, t, window, row_r, qk_scale,
                                          s_rks, s_rkr, s_rkw, s_rkh, s_rvs, s_rvr, s_rvw, s_rvh,
                                          R, BLOCK_M, BLOCK_L, HEAD_DIM, DOT_F32)
            o_loc = acc_l / tl.where(l_l == 0.0, 1.0, l_l)[:, None]
            g_ok = row_ok & (row_r >= 1)
            g = tl.load(GATE + b * s_gb + (row_r - 1) * s_gr + head * s_gh, mask=g_ok, other=1.0).to(tl.float32)
            o = g[:, None] * o + (1.0 - g)[:, None] * o_loc
        tl.store(O + (b * s_ob + row_r * s_or + head * s_oh)[:, None] + offs_d[None, :],
                 o.to(O.dtype.element_ty), mask=row_ok[:, None])


_counters: dict[torch.device, torch.Tensor] = {}
LAST_LAUNCH: dict[str, object] = {}  # the last compiled kernel and its launch settings (benchmarks read them)
_sm_count: dict[int, int] = {}


def _counter_buffer(device: torch.device, n: int) -> torch.Tensor:
    buf = _counters.get(device)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _counters[device] = buf
    return buf


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _sm_count:
        _sm_count[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _sm_count[idx]


def choose_num_splits(batch_kv_heads: int, max_seq_len: int, device: torch.device) -> int:
    """Context splits per (request, KV head) for a launch of batch_kv_heads (request, KV head) pairs.

    No split once the pairs alone give every SM a program (the batch fills the GPU). Otherwise enough splits
    for PROGRAMS_PER_SM programs per SM, at most cdiv(max_seq_len, MIN_KEYS_PER_SPLIT). Depends only on
    the batch and max_seq_len (the engine passes its block table's capacity), so a CUDA graph captured for a
    batch size keeps one grid; the kernel then spreads each request's actual length over the splits.
    """
    sms = _num_sms(device)
    if batch_kv_heads >= sms:
        return 1
    want = triton.cdiv(PROGRAMS_PER_SM * sms, max(batch_kv_heads, 1))
    return max(1, min(want, triton.cdiv(max_seq_len, MIN_KEYS_PER_SPLIT)))


def _interpreting() -> bool:
    return triton.knobs.runtime.interpret


def gswa_decode_triton(q, k_cache, v_cache, block_table, seq_lens, ring_k, ring_v, ring_slots, gate, *,
                       scale=None, num_splits=None, max_seq_len=None, block_n=None, block_l=16, num_warps=None,
                       num_stages=None, maxnreg=None, min_keys_per_split=None):
    """Triton path of gswa_decode (CUDA, or CPU under TRITON_INTERPRET=1). Same contract as the reference.

    block_table None: contiguous cache [B, S_max, G, D], request b in block b. num_splits (context splits per
    request and KV head) defaults to choose_num_splits (SM count, batch, max_seq_len; max_seq_len defaults to
    the cache's capacity); block_n / num_stages default by grid size (NARROW_CFG, WIDE_CFG); none of these
    changes the result beyond rounding.
    """
    _check_gqa(q, k_cache)
    bsz, r, h, d = q.shape
    nb, page_size, g, _ = k_cache.shape
    qpg = h // g
    rows = r * qpg
    block_m = max(16, triton.next_power_of_2(rows))
    if block_m > 128:
        raise ValueError(f"R * H/G = {rows} query rows per KV head; at most 128 supported")
    if d not in (16, 32, 64, 128, 256):
        raise ValueError(f"head_dim {d} not supported (16, 32, 64, 128, 256)")
    for t in (q, k_cache, v_cache):
        if t.stride(-1) != 1:
            raise ValueError("last dim of q and caches must be contiguous")
    paged = block_table is not None
    has_local = r > 1
    if has_local:
        if ring_k is None or ring_v is None or gate is None or ring_slots is None:
            raise ValueError("R > 1 needs ring_k, ring_v, ring_slots and gate")
        if ring_k.shape[1] < r - 1 or ring_k.stride(-1) != 1 or ring_v.stride(-1) != 1:
            raise ValueError("ring_k/ring_v must be [slots, R-1, W, G, D] with contiguous last dim")
    scale = d ** -0.5 if scale is None else scale
    o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if bsz == 0:
        return o
    interp = _interpreting() or not q.is_cuda
    capacity = block_table.shape[1] * page_size if paged else page_size
    if num_splits is None:
        num_splits = choose_num_splits(bsz * g, max_seq_len or capacity, q.device)
    split = num_splits > 1
    n_parts = num_splits + (1 if (split and has_local) else 0)
    # tile and pipeline depth from the grid (so from the batch and the capacity only: CUDA-graph safe)
    cfg_bn, cfg_stages = WIDE_CFG if bsz * g * n_parts > WIDE_GRID_PER_SM * _num_sms(q.device) else NARROW_CFG
    bn = block_n or (16 if interp else cfg_bn)
    if split:
        ws_acc = torch.empty(bsz * g * n_parts * block_m * d, dtype=torch.float32, device=q.device)
        ws_ml = torch.empty(bsz * g * n_parts * 2 * block_m, dtype=torch.float32, device=q.device)
        cnt = _counter_buffer(q.device, bsz * g)
    else:
        ws_acc = ws_ml = cnt = o  # unused
    bt = block_table if paged else seq_lens
    rk, rv, slots, gt = (ring_k, ring_v, ring_slots, gate) if has_local else (k_cache, v_cache, seq_lens, q)
    rks = tuple(ring_k.stride()[:4]) if has_local else (0, 0, 0, 0)
    rvs = tuple(ring_v.stride()[:4]) if has_local else (0, 0, 0, 0)
    gs = tuple(gate.stride()) if has_local else (0, 0, 0)
    window = ring_k.shape[2] if has_local else 1
    dot_f32 = interp and q.dtype == torch.bfloat16
    if min_keys_per_split is None:
        min_keys_per_split = MIN_KEYS_PER_SPLIT
    kw = {} if interp else {"num_warps": num_warps or 4, "num_stages": num_stages or cfg_stages}
    if maxnreg and not interp:
        kw["maxnreg"] = maxnreg  # register cap per thread: trades spills for resident programs per SM
    LAST_LAUNCH["decode_cfg"] = {"num_splits": num_splits, "block_n": bn, "min_keys_per_split": min_keys_per_split,
                                 **kw}
    LAST_LAUNCH["decode"] = _gswa_decode_kernel[(bsz * g, n_parts)](
        q, k_cache, v_cache, bt, seq_lens, rk, rv, slots, gt, o, ws_acc, ws_ml, cnt,
        scale * LOG2E, window, g, page_size, num_splits, max(1, triton.cdiv(min_keys_per_split, bn)),
        q.stride(0), q.stride(1), q.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        bt.stride(0),
        *rks, *rvs, *gs,
        o.stride(0), o.stride(1), o.stride(2),
        R=r, QPG=qpg, HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=bn, BLOCK_L=block_l,
        PAGED=paged, HAS_LOCAL=has_local, SPLIT=split, DOT_F32=dot_f32, **kw,
    )
    return o


def gswa_decode_contiguous_triton(q, k_cache, v_cache, seq_lens, ring_k, ring_v, ring_slots, gate, **kw):
    """gswa_decode_triton over a contiguous (HF static) cache k_cache [B, S_max, G, D], any strides."""
    return gswa_decode_triton(q, k_cache, v_cache, None, seq_lens, ring_k, ring_v, ring_slots, gate, **kw)
