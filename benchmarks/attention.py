"""PLT attention kernels vs PyTorch SDPA, side by side in one run; writes benchmarks/results/attention-<gpu>.json.

    python benchmarks/attention.py [--out PATH] [--quick] [--skip-prefill] [--sdpa-r2] [--sweep] [--rep MS]

Decode (LoopCoder-V2 heads: 40 query / 8 KV, head_dim 128, window 65, bf16, paged cache of 16-token blocks in
random order), batch 1/4/32 x context 1K/4K/16K/32K:
  ours R=1          one gswa_decode launch, num_splits from the default heuristic (choose_num_splits)
  ours R=1 no split the same with num_splits=1: one program per (request, KV head)
  ours R=2          both loop rows in one launch (the R=2/R=1 ratio)
  sdpa R=1          one SDPA call over a contiguous [B, G, S, D] cache (enable_gqa)
  --sdpa-r2: sdpa2+gate (SDPA over the cache for both rows, SDPA over the ring for row 1, gate mix) and
             sdpa3+gate (SDPA per row over the cache, SDPA over the ring, gate mix)
Bandwidth: bytes of K/V one step reads / time, and its share of two ceilings measured in the same run: a
2 GiB device copy (bytes read + written / time) and a read-only torch.sum over the same buffer.
Each decode variant is captured in a CUDA graph of N calls that rotate over enough cache copies to miss L2,
and timed by replaying it (triton.testing.do_bench, median). --sweep also times R=1 over num_splits x
(block_n, num_stages) x min_keys_per_split at a few shapes (the data behind the split heuristic).
Prefill: causal loop 0 and G-SWA loop 1 against SDPA's flash backend on the same causal problem, do_bench
median; TFLOP/s count causal matmul FLOPs only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from loopcoder.model_server import kernels as K
from loopcoder.model_server.kernels.triton_decode import LAST_LAUNCH, choose_num_splits, gswa_decode_triton
from loopcoder.model_server.kernels.triton_prefill import flops_causal

H, G, D, W, PAGE = 40, 8, 128, 65, 16
DT = torch.bfloat16
DEV = "cuda"  # the dry run (tests) sets "cpu" under TRITON_INTERPRET=1
L2_MISS_BYTES = 256 << 20  # rotate over cache copies until this many bytes, ~5x the H100's 50 MB L2
GRAPH_CALLS = 10


REP_MS = 200  # do_bench repetition time per measurement (--rep)


def median_ms(fn, warmup=50, rep=None):
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep or REP_MS, return_mode="median")


def graph_ms(step, n=GRAPH_CALLS):
    """Time step(i) for i in 0..n-1 captured in one CUDA graph; returns ms per call."""
    for i in range(n):  # warm up: compile, allocate workspaces outside capture
        step(i)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(n):
            step(i)
    return median_ms(graph.replay, warmup=20) / n


def max_err(out, ref):
    return (out.float() - ref.float()).abs().max().item()


# ------------------------------------------------------------------------------------------------- decode


def kernel_stats():
    k = LAST_LAUNCH.get("decode")
    return {"n_regs": getattr(k, "n_regs", None), "n_spills": getattr(k, "n_spills", None),
            "shared_bytes": getattr(getattr(k, "metadata", None), "shared", None),
            "launch": dict(LAST_LAUNCH.get("decode_cfg", {}))}


def decode_rows(batch, ctx, gen):
    """Random decode inputs for R=2 (q, rings, slots, gate, seq_lens) and the R=1 query."""
    q = torch.randn(batch, 2, H, D, device=DEV, dtype=DT, generator=gen)
    ring_k = torch.randn(batch, 1, W, G, D, device=DEV, dtype=DT, generator=gen)
    ring_v = torch.randn(batch, 1, W, G, D, device=DEV, dtype=DT, generator=gen)
    slots = torch.arange(batch, device=DEV, dtype=torch.int32)
    gate = torch.rand(batch, 1, H, device=DEV, generator=gen).to(DT)
    seq = torch.full((batch,), ctx, device=DEV, dtype=torch.int32)
    return q, ring_k, ring_v, slots, gate, seq, q[:, :1].contiguous()


def kv_bytes(batch, ctx):
    """Bytes of loop-0 K and V one decode step must read (bf16)."""
    return batch * ctx * G * D * 2 * 2


def paged_caches(batch, ctx, gen):
    """Enough copies of a paged cache (random block order) that rotating over them misses L2."""
    copies = max(1, min(8, math.ceil(L2_MISS_BYTES / kv_bytes(batch, ctx))))
    nb = batch * ctx // PAGE
    caches = []
    for _ in range(copies):
        kc = torch.randn(nb, PAGE, G, D, device=DEV, dtype=DT, generator=gen)
        vc = torch.randn(nb, PAGE, G, D, device=DEV, dtype=DT, generator=gen)
        bt = torch.randperm(nb, device=DEV, generator=gen).reshape(batch, ctx // PAGE).int()
        caches.append((kc, vc, bt))
    return caches


def measure_bandwidth(gib=2):
    """HBM ceilings in this run: a device-to-device copy (bytes read + written) and a read-only sum."""
    x = torch.randn(gib << 29, device=DEV, dtype=DT)
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    copy_ms = median_ms(lambda: y.copy_(x))
    read_ms = median_ms(lambda: x.sum(dtype=torch.float32))
    del x, y
    torch.cuda.empty_cache()
    return {"bytes": nbytes, "copy_GBps": 2 * nbytes / (copy_ms * 1e-3) / 1e9,
            "read_GBps": nbytes / (read_ms * 1e-3) / 1e9}


def bench_decode(batch, ctx, errors, bw, sdpa_r2=False):
    """One shape: ours R=1 with the default splits and with none, ours R=2, SDPA R=1 (and R=2 the SDPA way)."""
    gen = torch.Generator(device=DEV).manual_seed(batch * 7 + ctx)
    caches = paged_caches(batch, ctx, gen)
    copies = len(caches)
    q, ring_k, ring_v, slots, gate, seq, q1 = decode_rows(batch, ctx, gen)
    out = {"num_splits": choose_num_splits(batch * G, ctx, q.device)}

    def ours(r, **kw):
        def step(i):
            kc, vc, bt = caches[i % copies]
            if r == 2:
                return gswa_decode_triton(q, kc, vc, bt, seq, ring_k, ring_v, slots, gate, **kw)
            return gswa_decode_triton(q1, kc, vc, bt, seq, None, None, None, None, **kw)
        return step

    out["ours_r1_us"] = graph_ms(ours(1)) * 1e3
    out["kernel_r1"] = kernel_stats()
    out["ours_r1_nosplit_us"] = graph_ms(ours(1, num_splits=1)) * 1e3
    out["ours_r2_us"] = graph_ms(ours(2)) * 1e3
    out["kernel_r2"] = kernel_stats()
    if batch * ctx <= 8 * 32768:  # correctness at these shapes (the reference loops over requests)
        kc, vc, bt = caches[0]
        ref = K.gswa_decode_reference(q, kc, vc, bt, seq, ring_k, ring_v, slots, gate)
        errors[f"decode R=2 B={batch} ctx={ctx}"] = max_err(
            gswa_decode_triton(q, kc, vc, bt, seq, ring_k, ring_v, slots, gate), ref)
        errors[f"decode R=1 B={batch} ctx={ctx}"] = max_err(
            gswa_decode_triton(q1, kc, vc, bt, seq, None, None, None, None), ref[:, :1])
        errors[f"decode R=1 no split B={batch} ctx={ctx}"] = max_err(
            gswa_decode_triton(q1, kc, vc, bt, seq, None, None, None, None, num_splits=1), ref[:, :1])
    caches.clear()

    # SDPA baselines over a contiguous cache in SDPA's layout [B, G, S, D]
    sd = [(torch.randn(batch, G, ctx, D, device=DEV, dtype=DT, generator=gen),
           torch.randn(batch, G, ctx, D, device=DEV, dtype=DT, generator=gen)) for _ in range(copies)]
    qh = q.transpose(1, 2)  # [B, H, R, D]
    rk = ring_k[:, 0].transpose(1, 2)  # [B, G, W, D]; all W entries valid once t >= W-1, order irrelevant
    rv = ring_v[:, 0].transpose(1, 2)
    g4 = gate.transpose(1, 2)[..., None]  # [B, H, 1, 1]

    def sdpa_r1(i):
        kc, vc = sd[i % copies]
        return F.scaled_dot_product_attention(qh[:, :, :1], kc, vc, enable_gqa=True)

    def sdpa2_gate(i):
        kc, vc = sd[i % copies]
        og = F.scaled_dot_product_attention(qh, kc, vc, enable_gqa=True)
        ol = F.scaled_dot_product_attention(qh[:, :, 1:], rk, rv, enable_gqa=True)
        return torch.cat([og[:, :, :1], g4 * og[:, :, 1:] + (1 - g4) * ol], dim=2)

    def sdpa3_gate(i):
        kc, vc = sd[i % copies]
        o0 = F.scaled_dot_product_attention(qh[:, :, :1], kc, vc, enable_gqa=True)
        og = F.scaled_dot_product_attention(qh[:, :, 1:], kc, vc, enable_gqa=True)
        ol = F.scaled_dot_product_attention(qh[:, :, 1:], rk, rv, enable_gqa=True)
        return torch.cat([o0, g4 * og + (1 - g4) * ol], dim=2)

    out["sdpa_r1_us"] = graph_ms(sdpa_r1) * 1e3
    if sdpa_r2:
        out["sdpa2_gate_r2_us"] = graph_ms(sdpa2_gate) * 1e3
        out["sdpa3_gate_r2_us"] = graph_ms(sdpa3_gate) * 1e3
        out["speedup_vs_sdpa2_gate"] = out["sdpa2_gate_r2_us"] / out["ours_r2_us"]
    sd.clear()
    out["ratio_r2_over_r1"] = out["ours_r2_us"] / out["ours_r1_us"]
    out["ours_r1_over_sdpa_r1"] = out["ours_r1_us"] / out["sdpa_r1_us"]
    nb = kv_bytes(batch, ctx)
    for key in ("ours_r1", "ours_r1_nosplit", "sdpa_r1"):
        gbps = nb / (out[f"{key}_us"] * 1e-6) / 1e9
        out[f"{key}_GBps"] = gbps
        out[f"{key}_share_of_copy_bw"] = gbps / bw["copy_GBps"]
        out[f"{key}_share_of_read_bw"] = gbps / bw["read_GBps"]
    out["ours_r2_GBps"] = (nb + batch * W * G * D * 4) / (out["ours_r2_us"] * 1e-6) / 1e9
    out["l2_rotation_copies"] = copies
    return out


DEFAULT_CFG = (None, None)  # (block_n, num_stages): the kernel's defaults
# (batch, ctx, R, split counts, min_keys_per_split values, (block_n, num_stages) configs). The first sweep
# (attention-h200-splitkv-run1.json) also had (64, 2): one K/V tile in flight, the pipelining the kernel had
# before the block-table prefetch.
SWEEP = (
    (1, 4096, 1, (8, 16, 33), (64, 256), (DEFAULT_CFG,)),
    (1, 32768, 1, (16, 33, 49), (256,), (DEFAULT_CFG,)),
    (4, 4096, 1, (4, 9, 12), (256,), (DEFAULT_CFG,)),
    (4, 32768, 1, (6, 9, 12, 16), (256,), (DEFAULT_CFG,)),
    (32, 4096, 1, (1,), (256,), (DEFAULT_CFG, (32, 4))),
    (64, 4096, 1, (1,), (256,), (DEFAULT_CFG, (64, 3))),
    (64, 4096, 2, (1,), (256,), (DEFAULT_CFG, (64, 3))),
)


def sweep_decode(rows, sweep=SWEEP):
    """Decode over num_splits x min_keys_per_split x (block_n, num_stages) at a few shapes (appends rows)."""
    for batch, ctx, r, split_list, min_keys, configs in sweep:
        gen = torch.Generator(device=DEV).manual_seed(batch * 7 + ctx)
        caches = paged_caches(batch, ctx, gen)
        q, ring_k, ring_v, slots, gate, seq, q1 = decode_rows(batch, ctx, gen)
        ring = (ring_k, ring_v, slots, gate) if r == 2 else (None, None, None, None)
        for bn, st in configs:
            for ns in split_list:
                for mk in min_keys:
                    if mk != min_keys[0] and ctx // ns >= max(min_keys):
                        continue  # every split already has more keys than either minimum: same launch
                    us = graph_ms(lambda i: gswa_decode_triton(q if r == 2 else q1, *caches[i % len(caches)], seq,
                                                               *ring, num_splits=ns, block_n=bn, num_stages=st,
                                                               min_keys_per_split=mk)) * 1e3
                    rows.append({"batch": batch, "ctx": ctx, "R": r, "block_n": bn, "num_stages": st,
                                 "num_splits": ns, "min_keys_per_split": mk, "us": round(us, 2), **kernel_stats()})
                    print(f"sweep B={batch:2d} ctx={ctx:5d} R={r} bn={bn} stages={st} splits={ns:3d} min_keys={mk}: "
                          f"{us:7.2f} us", flush=True)
        caches.clear()
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ prefill


def sdpa_flash_causal(q, k, v):
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def bench_prefill(batch, seqlen, errors):
    gen = torch.Generator(device=DEV).manual_seed(seqlen + batch)
    n = batch * seqlen
    q = torch.randn(n, H, D, device=DEV, dtype=DT, generator=gen)
    k0, v0, kl, vl = (torch.randn(n, G, D, device=DEV, dtype=DT, generator=gen) for _ in range(4))
    gate = torch.rand(n, H, device=DEV, generator=gen).to(DT)
    c = torch.arange(0, n + 1, seqlen, device=DEV, dtype=torch.int32)
    args = (q, k0, v0, c, c, seqlen, seqlen)
    loc = dict(k_loc=kl, v_loc=vl, cu_seqlens_kl=c, gate=gate, window=W)
    # SDPA on the same problem: [B, H, T, D] with GQA
    qs = q.view(batch, seqlen, H, D).transpose(1, 2)
    ks = k0.view(batch, seqlen, G, D).transpose(1, 2)
    vs = v0.view(batch, seqlen, G, D).transpose(1, 2)
    K.gswa_prefill(*args)  # autotune outside the timing
    K.gswa_prefill(*args, **loc)
    out = {"ours_loop0_ms": median_ms(lambda: K.gswa_prefill(*args)),
           "ours_gswa_ms": median_ms(lambda: K.gswa_prefill(*args, **loc))}
    try:
        out["sdpa_flash_ms"] = median_ms(lambda: sdpa_flash_causal(qs, ks, vs))
        o_sdpa = sdpa_flash_causal(qs, ks, vs).transpose(1, 2).reshape(n, H, D)
        errors[f"prefill loop0 vs sdpa-flash B={batch} T={seqlen}"] = max_err(K.gswa_prefill(*args), o_sdpa)
    except RuntimeError as exc:  # flash backend refused (e.g. no GQA): record why
        out["sdpa_flash_error"] = str(exc)[:300]
    fl = flops_causal([seqlen] * batch, [seqlen] * batch, H, D)
    out["causal_tflops"] = fl / 1e12
    for key in ("ours_loop0", "ours_gswa", "sdpa_flash"):
        if f"{key}_ms" in out:
            out[f"{key}_TFLOPs"] = fl / (out[f"{key}_ms"] * 1e-3) / 1e12
    if "sdpa_flash_ms" in out:
        out["loop0_vs_flash"] = out["sdpa_flash_ms"] / out["ours_loop0_ms"]
        out["gswa_vs_flash"] = out["sdpa_flash_ms"] / out["ours_gswa_ms"]
    if seqlen * batch <= 8192:
        errors[f"prefill gswa vs reference B={batch} T={seqlen}"] = max_err(K.gswa_prefill(*args, **loc),
                                                                          K.gswa_prefill_reference(*args, **loc))
    return out


def sweep_b64(out_path):
    """Decode at batch 64: R=1 and R=2 over num_splits and maxnreg; prints a table, writes JSON."""
    rows = []
    for ctx in (4096, 32768):
        batch = 64
        gen = torch.Generator(device=DEV).manual_seed(ctx)
        nb = batch * ctx // PAGE
        kc = torch.randn(nb, PAGE, G, D, device=DEV, dtype=DT, generator=gen)
        vc = torch.randn(nb, PAGE, G, D, device=DEV, dtype=DT, generator=gen)
        bt = torch.randperm(nb, device=DEV, generator=gen).reshape(batch, ctx // PAGE).int()
        q, ring_k, ring_v, slots, gate, seq, q1 = decode_rows(batch, ctx, gen)
        ref = K.gswa_decode_reference(q[:4], kc, vc, bt[:4], seq[:4], ring_k, ring_v, slots[:4], gate[:4])
        for ns in (1, 2, 3, 4):
            for reg in (None, 128):
                t1 = graph_ms(lambda i: gswa_decode_triton(q1, kc, vc, bt, seq, None, None, None, None,
                                                           num_splits=ns, maxnreg=reg)) * 1e3
                t2 = graph_ms(lambda i: gswa_decode_triton(q, kc, vc, bt, seq, ring_k, ring_v, slots, gate,
                                                           num_splits=ns, maxnreg=reg)) * 1e3
                err = max_err(gswa_decode_triton(q, kc, vc, bt, seq, ring_k, ring_v, slots, gate, num_splits=ns,
                                                 maxnreg=reg)[:4], ref)
                rows.append({"ctx": ctx, "num_splits": ns, "maxnreg": reg, "r1_us": round(t1, 1),
                             "r2_us": round(t2, 1), "max_abs_err_r2": err})
                print(f"B=64 ctx={ctx:6d} splits={ns} maxnreg={reg}: R1 {t1:8.1f} us  R2 {t2:8.1f} us", flush=True)
        del kc, vc
        torch.cuda.empty_cache()
    if out_path:
        Path(out_path).write_text(json.dumps({"command": " ".join([Path(sys.executable).name] + sys.argv),
                                              "gpu": torch.cuda.get_device_name(), "rows": rows}, indent=2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--skip-prefill", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--sdpa-r2", action="store_true", help="also time R=2 the SDPA way (sdpa2+gate, sdpa3+gate)")
    ap.add_argument("--sweep", action="store_true",
                    help="also time R=1 decode over num_splits x (block_n, num_stages) x min_keys_per_split")
    ap.add_argument("--rep", type=int, default=200, help="do_bench repetition time per measurement, ms")
    ap.add_argument("--sweep-b64", action="store_true",
                    help="only: decode at B=64 for num_splits x register cap (the R=2 occupancy miss)")
    a = ap.parse_args()
    global REP_MS
    REP_MS = a.rep
    if a.sweep_b64:
        return sweep_b64(a.out)
    name = torch.cuda.get_device_name()
    tag = "h100" if "H100" in name else "h200" if "H200" in name else name.split()[-1].lower()
    path = Path(a.out or Path(__file__).parent / "results" / f"attention-{tag}.json")
    res = {"command": " ".join([Path(sys.executable).name] + sys.argv), "gpu": name,
           "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "date": datetime.datetime.now(datetime.UTC).isoformat(),
           "sms": torch.cuda.get_device_properties(0).multi_processor_count,
           "shapes": {"heads": H, "kv_heads": G, "head_dim": D, "window": W, "dtype": "bf16", "page": PAGE},
           "decode": [], "prefill": [], "max_abs_err": {}}
    errors = res["max_abs_err"]

    def save():  # after every shape, so a run cut short still leaves what it measured
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1) + "\n")

    if not a.skip_decode:
        bw = res["bandwidth"] = measure_bandwidth()
        print(f"HBM: copy {bw['copy_GBps']:.0f} GB/s (read + write), read-only sum {bw['read_GBps']:.0f} GB/s",
              flush=True)
        for batch in ((1, 8) if a.quick else (1, 4, 32)):
            for ctx in ((4096, 32768) if a.quick else (1024, 4096, 16384, 32768)):
                row = {"batch": batch, "ctx": ctx, **bench_decode(batch, ctx, errors, bw, a.sdpa_r2)}
                res["decode"].append(row)
                print(f"decode B={batch:3d} ctx={ctx:6d} splits={row['num_splits']:3d}: ours R1 "
                      f"{row['ours_r1_us']:8.1f} us ({row['ours_r1_share_of_copy_bw']:4.0%} of copy bw)  no split "
                      f"{row['ours_r1_nosplit_us']:8.1f}  sdpa R1 {row['sdpa_r1_us']:8.1f} "
                      f"({row['sdpa_r1_share_of_copy_bw']:4.0%})  ours/sdpa {row['ours_r1_over_sdpa_r1']:.2f}  "
                      f"R2 {row['ours_r2_us']:8.1f} (x{row['ratio_r2_over_r1']:.3f})"
                      + (f"  sdpa2+gate {row['sdpa2_gate_r2_us']:8.1f}  sdpa3+gate {row['sdpa3_gate_r2_us']:8.1f}"
                         if a.sdpa_r2 else "")
                      + f"  regs {row['kernel_r1']['n_regs']}/{row['kernel_r2']['n_regs']}"
                      f" smem {row['kernel_r1']['shared_bytes']}/{row['kernel_r2']['shared_bytes']}", flush=True)
                torch.cuda.empty_cache()
                save()
        if a.sweep:
            res["decode_sweep"] = []
            sweep_decode(res["decode_sweep"])
            save()
    if not a.skip_prefill:
        for batch, seqlen in ([(1, 4096), (1, 16384)] if a.quick else [(1, 4096), (1, 16384), (8, 2048),
                                                                        (1, 32768)]):
            row = {"batch": batch, "seqlen": seqlen, **bench_prefill(batch, seqlen, errors)}
            res["prefill"].append(row)
            print(f"prefill B={batch} T={seqlen:6d}: loop0 {row['ours_loop0_ms']:.3f} ms "
                  f"({row.get('ours_loop0_TFLOPs', 0):.0f} TF)  gswa {row['ours_gswa_ms']:.3f} ms "
                  f"({row.get('ours_gswa_TFLOPs', 0):.0f} TF)  sdpa-flash {row.get('sdpa_flash_ms', float('nan')):.3f}"
                  f" ms ({row.get('sdpa_flash_TFLOPs', 0):.0f} TF)  gswa/flash {row.get('gswa_vs_flash', 0):.2f}",
                  flush=True)
            torch.cuda.empty_cache()
    dec = res["decode"]
    res["targets"] = {
        "decode_r1_not_slower_than_sdpa_r1": all(r["ours_r1_over_sdpa_r1"] <= 1.0 for r in dec) if dec else None,
        "decode_r2_over_r1_le_1.15": all(r["ratio_r2_over_r1"] <= 1.15 for r in dec) if dec else None,
        "decode_r2_not_slower_than_sdpa2_gate": all(r["speedup_vs_sdpa2_gate"] >= 1.0 for r in dec)
        if dec and a.sdpa_r2 else None,
        "prefill_gswa_ge_0.7_flash": all(r.get("gswa_vs_flash", 0) >= 0.7 for r in res["prefill"])
        if res["prefill"] else None,
    }
    for k, v in errors.items():
        print(f"max abs err  {k}: {v:.3e}")
    print("targets:", json.dumps(res["targets"]))
    save()
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], path.name).write_text(json.dumps(res, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
