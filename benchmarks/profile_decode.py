"""Where a decode step's time goes: kernel time (torch profiler), CUDA-graph GPU time and the host gap.

For R=1 and R=2 (fused) at batch 1 and 32, on the LoopCoder-V2 shape with random bf16 weights
(``benchmarks/engine.py``'s model), one process:

- ``eager``: one decode step run eagerly under the torch profiler (CUDA activity only): kernel time and
  kernel count per step, grouped by kind, and the top kernels;
- ``graph_gpu_ms``: the captured decode graph replayed back to back, timed with CUDA events (the GPU
  time of one step's forward when the host never makes it wait);
- ``step_ms``: a full ``LLMEngine.step()`` (scheduling, inputs, graph replay, sampling, bookkeeping),
  synchronised before and after, median, as benchmarks/engine.py times it;
- ``busy_ms``: the union of kernel intervals inside profiled ``LLMEngine.step()`` calls (graph kernels
  included), per step; ``host_gap_ms`` = step_ms - busy_ms: the time the GPU waits for the host;
- ``host_ms``: wall time of the host parts inside a step (schedule, decode inputs + replay launch,
  sample incl. its one read of the tokens, the rest), measured by wrapping those calls with a timer.

    python benchmarks/profile_decode.py --out benchmarks/results/profile-decode-h200.json
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from engine import build_model, graph_gpu_ms, make_engine  # noqa: E402  (benchmarks/engine.py)

KINDS = [  # first match wins; lower-case substrings of kernel names
    ("gemm", ("gemm", "gemv", "nvjet", "cutlass", "sm90_xmma", "cublas", "splitk")),
    ("attention", ("gswa", "attn", "attention", "flash")),
    ("norm", ("norm",)),
    ("reduce", ("reduce",)),
    ("index/scatter/gather", ("index", "scatter", "gather")),
    ("copy/cat", ("copy", "cat", "memcpy", "memset", "fill")),
    ("elementwise", ("elementwise",)),
]


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def _kernels(prof):
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def eager_profile(runner, inputs, steps: int = 3) -> dict:
    for _ in range(2):
        runner._decode_step(*inputs)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            runner._decode_step(*inputs)
        torch.cuda.synchronize()
    kernels = _kernels(prof)
    by_kind: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    by_name: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for e in kernels:
        t = e.time_range.elapsed_us()
        by_kind[kind_of(e.name)][0] += t / 1000 / steps
        by_kind[kind_of(e.name)][1] += 1 / steps
        by_name[e.name][0] += t / 1000 / steps
        by_name[e.name][1] += 1 / steps
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:12]
    return {
        "kernel_ms": sum(v[0] for v in by_kind.values()),
        "kernels": round(sum(v[1] for v in by_kind.values())),
        "by_kind": {k: {"ms": round(v[0], 4), "count": round(v[1])} for k, v in sorted(by_kind.items())},
        "top": [{"name": n[:90], "ms": round(v[0], 4), "count": round(v[1])} for n, v in top],
    }


def _union_ms(intervals) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total / 1000


def step_profile(engine, steps: int) -> dict:
    import loopcoder.model_server.engine.llm_engine as le

    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        engine.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    # GPU busy time inside steps (graph kernels included)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            torch.cuda.synchronize()
            engine.step()
            torch.cuda.synchronize()
    kernels = _kernels(prof)
    busy = _union_ms([(e.time_range.start, e.time_range.end) for e in kernels]) / 5 if kernels else None
    # host parts: wrap the calls of one step with timers (the wrapped functions run unchanged)
    parts: dict[str, float] = collections.defaultdict(float)

    def timed(owner, name, key):
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[key] += time.perf_counter() - t
        setattr(owner, name, wrapper)
        return fn

    originals = [(engine.scheduler, "schedule", timed(engine.scheduler, "schedule", "schedule")),
                 (engine.runner, "decode", timed(engine.runner, "decode", "decode_launch")),
                 (le, "sample_on_device", timed(le, "sample_on_device", "sample")),
                 (engine, "_resolve", timed(engine, "_resolve", "token_read_and_bookkeeping"))]
    n, total = 10, 0.0
    try:
        for _ in range(n):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            engine.step()
            total += time.perf_counter() - t0
            torch.cuda.synchronize()
    finally:
        for owner, name, fn in originals:
            if owner is le:
                setattr(le, name, fn)
            else:
                delattr(owner, name) if name in vars(owner) else None
    host = {k: 1000 * v / n for k, v in parts.items()}
    host["rest"] = 1000 * total / n - sum(host.values())
    step = 1000 * statistics.median(times)
    return {"step_ms": step, "busy_ms": busy, "host_gap_ms": None if busy is None else step - busy,
            "host_ms": host}


def case(engine, batch: int, context: int, steps: int) -> dict:
    from loopcoder.model_server.engine import SamplingParams

    params = SamplingParams(max_tokens=10_000, temperature=0, ignore_eos=True)
    gen = torch.Generator().manual_seed(batch)
    ids = [f"p{batch}-{i}" for i in range(batch)]
    for rid in ids:
        engine.submit(torch.randint(3, 70000, (context,), generator=gen).tolist(), params, rid)
    while engine.scheduler.waiting or engine._inbox or any(s.in_prefill for s in engine.scheduler.running):
        engine.step()
    for _ in range(3):
        engine.step()
    seqs = list(engine.scheduler.running)
    runner = engine.runner
    out = {"eager": eager_profile(runner, runner._decode_inputs(seqs)),
           "graph_gpu_ms": graph_gpu_ms(runner, batch)}
    out.update(step_profile(engine, steps))
    for rid in ids:
        engine.abort(rid)
    engine.step()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/profile-decode.json")
    ap.add_argument("--layers", type=int, default=14)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--context", type=int, default=1024)
    args = ap.parse_args()
    model = build_model(args.layers)
    results = {}
    for loops in (1, 2):
        # synchronous steps: this profiles the parts of one step (benchmarks/engine.py measures async)
        engine = make_engine(model, loops, "fused", max_num_seqs=64, max_model_len=args.context + 512,
                             graph_sizes=[1, 32, 64], async_scheduling=False)
        for batch in (1, 32):
            key = f"R{loops}.b{batch}"
            results[key] = r = case(engine, batch, args.context, args.steps)
            print(f"[{key}] eager kernels {r['eager']['kernel_ms']:.3f} ms ({r['eager']['kernels']} kernels); "
                  f"graph {r['graph_gpu_ms']:.3f} ms; step {r['step_ms']:.3f} ms; busy {r['busy_ms']:.3f} ms; "
                  f"gap {r['host_gap_ms']:.3f} ms; host {json.dumps({k: round(v, 3) for k, v in r['host_ms'].items()})}",
                  flush=True)
        del engine
        torch.cuda.empty_cache()
    report = {"command": "python " + " ".join(sys.argv), "gpu": torch.cuda.get_device_name(),
              "torch": torch.__version__, "triton": __import__("triton").__version__,
              "python": platform.python_version(), "context": args.context, "results": results}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    for key, r in results.items():
        print(key, json.dumps(r["eager"]["by_kind"]))


if __name__ == "__main__":
    main()
