"""CPU prefill attention: gswa_prefill_reference against gswa_prefill_cpu, side by side in one run.

LoopCoder-Nano's attention shapes (9 query heads, 3 KV heads, head_dim 64, window 65, float32): prompts of
512, 1,500 and 4,000 tokens and an extend chunk of 300 queries over 2,000 keys (local keys: the chunk plus
the 64 before it), loop 0 (causal) and loop 1 (gated sliding window); best of a few repeats each, one
PyTorch thread. Also the decode attention, gswa_decode_reference against gswa_decode_cpu (R=2 rows, paged
cache) at batch 1 and 4 over 2,000-token contexts and batch 1 over 4,000, and, when a Nano checkpoint is given
and exists, the engine end to end: a 1,500-token prompt (random ids) plus 8 greedy tokens with the engine's
attention switched between the references and the CPU paths (prefill and decode), the time of the prefill
step, of the decode steps and inside the attention calls, and whether both give the same tokens.

    .venv/bin/python benchmarks/cpu_attention.py --model /work/main/.cache/nano-r2 \
        --out benchmarks/results/cpu-attention.json

`--blocks 32,64,128` also times gswa_prefill_cpu's local block sizes at 1,500 tokens, loop 1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from loopcoder.model_server import kernels as K
from loopcoder.model_server.kernels.cpu import LOCAL_BLOCK, gswa_decode_cpu, gswa_prefill_cpu

H, G, D, W = 9, 3, 64, 65
LAYERS, LOOPS = 30, 2  # Nano: every decode step runs the attention LAYERS x LOOPS times (R rows fused)


def best_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(min(times) * 1e3, 3)


def cu(lens):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)


def prefill_case(lq, lk, gen):
    """Arguments of one sequence: lq queries at the end of lk keys; local keys = queries + window - 1 before."""
    ll = min(lk, lq + W - 1)
    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    args = (rnd(lq, H, D), rnd(lk, G, D), rnd(lk, G, D), cu([lq]), cu([lk]), lq, lk)
    loc = dict(k_loc=rnd(ll, G, D), v_loc=rnd(ll, G, D), cu_seqlens_kl=cu([ll]),
               gate=torch.rand(lq, H, generator=gen), window=W)
    return args, loc


def kernel_cases(repeats):
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, lq, lk in [("prompt 512", 512, 512), ("prompt 1500", 1500, 1500), ("prompt 4000", 4000, 4000),
                         ("extend 300 over 2000", 300, 2000)]:
        args, loc = prefill_case(lq, lk, gen)
        for loop, extra in ((0, {}), (1, loc)):
            ref_reps = 2 if lk >= 4000 else repeats  # the reference takes seconds there
            ref = best_ms(lambda: K.gswa_prefill_reference(*args, **extra), ref_reps)
            new = best_ms(lambda: gswa_prefill_cpu(*args, **extra), repeats)
            err = (gswa_prefill_cpu(*args, **extra) - K.gswa_prefill_reference(*args, **extra)).abs().max().item()
            rows.append({"case": name, "len_q": lq, "len_k": lk, "loop": loop, "reference_ms": ref, "cpu_ms": new,
                         "speedup": round(ref / new, 2), "max_abs_err": err, "repeats": [ref_reps, repeats]})
            print(f"{name:22s} loop {loop}: reference {ref:9.1f} ms  cpu {new:8.1f} ms  "
                  f"x{ref / new:5.1f}  err {err:.1e}", flush=True)
    return rows


def block_sweep(blocks, repeats):
    args, loc = prefill_case(1500, 1500, torch.Generator().manual_seed(1))
    out = {}
    for b in blocks:
        out[b] = best_ms(lambda: gswa_prefill_cpu(*args, **loc, block=b), repeats)
        print(f"block {b}: {out[b]} ms (prompt 1500, loop 1)", flush=True)
    return out


def decode_cases(repeats):
    """gswa_decode, reference vs CPU path, all R=2 rows, paged 16-token blocks in random order."""
    gen = torch.Generator().manual_seed(2)
    rows = []
    for batch, ctx in ((1, 2000), (4, 2000), (1, 4000)):
        block = 16
        per = -(-ctx // block)
        k_cache, v_cache = (torch.randn(batch * per + 1, block, G, D, generator=gen) for _ in range(2))
        table = torch.randperm(batch * per, generator=gen).view(batch, per).to(torch.int32)
        ring_k, ring_v = (torch.randn(batch, LOOPS - 1, W, G, D, generator=gen) for _ in range(2))
        args = (torch.randn(batch, LOOPS, H, D, generator=gen), k_cache, v_cache, table,
                torch.full((batch,), ctx, dtype=torch.int32), ring_k, ring_v,
                torch.arange(batch, dtype=torch.int32), torch.rand(batch, LOOPS - 1, H, generator=gen))
        ref = best_ms(lambda: K.gswa_decode_reference(*args), repeats)
        new = best_ms(lambda: gswa_decode_cpu(*args), repeats)
        err = (gswa_decode_cpu(*args) - K.gswa_decode_reference(*args)).abs().max().item()
        rows.append({"batch": batch, "context": ctx, "rows": LOOPS, "reference_ms": ref, "cpu_ms": new,
                     "speedup": round(ref / new, 2), "reference_per_step_ms": round(ref * LAYERS, 1),
                     "cpu_per_step_ms": round(new * LAYERS, 1), "max_abs_err": err})
        print(f"decode B={batch} ctx {ctx}: reference {ref:6.2f} ms  cpu {new:5.2f} ms  x{ref / new:4.1f}  "
              f"(x{LAYERS} layers: {ref * LAYERS:.0f} vs {new * LAYERS:.0f} ms per step)  err {err:.1e}", flush=True)
    return rows


def end_to_end(model_path, prompt_len, max_tokens):
    from loopcoder.model_server.engine import EngineConfig, LLMEngine, SamplingParams
    from loopcoder.model_server.engine import model_runner
    from loopcoder.model_server.plt.checkpoint import load_checkpoint

    cfg = EngineConfig(model=model_path, max_num_seqs=1, max_model_len=2048, enable_prefix_caching=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tokenizer = load_checkpoint(model_path, dtype=cfg.dtype, device="cpu")
    engine = LLMEngine(model, tokenizer, cfg)
    runner = engine.runner
    prompt = torch.randint(0, engine.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(3)).tolist()
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)

    clock = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                clock[name] = clock.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    # the engine calls model_runner.gswa_prefill / gswa_decode by module attribute: switch and time them there
    original = {name: getattr(model_runner, name) for name in ("gswa_prefill", "gswa_decode")}
    runner.prefill, runner.decode = timed("prefill_step", runner.prefill), timed("decode_steps", runner.decode)
    results = {}
    try:
        for variant, prefill_fn, decode_fn in (("reference", K.gswa_prefill_reference, K.gswa_decode_reference),
                                               ("cpu", gswa_prefill_cpu, gswa_decode_cpu)):
            model_runner.gswa_prefill = timed("prefill_attention", prefill_fn)
            model_runner.gswa_decode = timed("decode_attention", decode_fn)
            clock.clear()
            started = time.perf_counter()
            [tokens] = engine.generate([prompt], params)
            total = time.perf_counter() - started
            results[variant] = {"total_s": round(total, 2), "tokens": tokens,
                                **{k + "_s": round(v, 3) for k, v in sorted(clock.items())}}
            print(f"end to end {variant}: {results[variant]}", flush=True)
    finally:
        for name, fn in original.items():
            setattr(model_runner, name, fn)
    ref, new = results["reference"], results["cpu"]
    for part in ("total", "prefill_step", "decode_steps"):
        results[f"speedup_{part}"] = round(ref[f"{part}_s"] / new[f"{part}_s"], 2)
    steps = max_tokens - 1  # the prefill step samples the first token
    results["decode_step_ms"] = {v: round(results[v]["decode_steps_s"] * 1e3 / steps, 1) for v in ("reference", "cpu")}
    results["tokens_equal"] = results["reference"]["tokens"] == results["cpu"]["tokens"]
    results["workload"] = {"model": model_path, "prompt_tokens": prompt_len, "ids": "random", "max_tokens": max_tokens,
                           "sampling": "greedy", "prefix_caching": False, "dtype": str(runner.dtype)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/cpu-attention.json")
    parser.add_argument("--model", default="/work/main/.cache/nano-r2", help="Nano checkpoint (skipped if absent)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blocks", default="", help="comma-separated local block sizes to sweep")
    parser.add_argument("--prompt", type=int, default=1500)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    result = {
        "command": ".venv/bin/python " + " ".join(sys.argv),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "note": "one PyTorch thread on a 2-core machine shared with another job: timings are noisy",
        "load_average_at_start": os.getloadavg(),
        "shape": {"heads": H, "kv_heads": G, "head_dim": D, "window": W, "dtype": "float32",
                  "local_block": LOCAL_BLOCK},
        "prefill": kernel_cases(args.repeats),
    }
    if args.blocks:
        result["block_sweep_ms"] = block_sweep([int(b) for b in args.blocks.split(",")], args.repeats)
    result["decode"] = decode_cases(args.repeats + 2)
    if args.model and Path(args.model).is_dir():
        result["end_to_end"] = end_to_end(args.model, args.prompt, args.max_tokens)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
