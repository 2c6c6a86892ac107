"""Native-engine decode and prefill speed for a LoopCoder-V2-shaped model with random bf16 weights.

Measures, side by side in one process on one GPU (issue 5's targets in brackets):
- batch-1 decode tokens/s, R=2 fused [>= 170 tok/s, 85% of the 198 tok/s weight-read roofline];
- decode step time R=2 / R=1 at batch 1 and 32 [<= 1.05 and <= 1.10];
- R=2 fused vs R=2 as two sequential passes (the authors' vLLM fork) at batch 1 [>= 1.7x];
- KV bytes per token at 32K context, R=2 / R=1 [<= 1.01];
- time to first token for a 1K prompt; decode throughput at batch 64 with 2K context.

A decode step's time is the wall time of ``--steps`` full ``LLMEngine.step()`` calls run back to back
(scheduling, CUDA-graph replay, sampling, bookkeeping), divided by the steps, with a device synchronise
before and after: with async scheduling (the default on CUDA) step n+1 runs on the device while the host
reads step n's tokens, so steps must not be synchronised one by one. R=1 and R=2 at batch 1 and 32 are
measured with async scheduling on and off on the same engine, side by side, with the GPU time of the
decode graph alone (CUDA events over back-to-back replays): host gap = step time - graph GPU time.
``--no-async-scheduling`` measures everything with it off.

    python benchmarks/engine.py --out benchmarks/results/engine-h100.json
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time

import torch


DEVICE = "cuda"  # --device cpu: a dry run of this script on a small shape (no graphs, no GPU numbers)


def build_model(layers: int):
    from loopcoder.model_server.plt import IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM

    small = DEVICE == "cpu"
    config = IQuestPLTCoderConfig(
        vocab_size=76800, hidden_size=256 if small else 5120, intermediate_size=512 if small else 27648,
        num_hidden_layers=layers, num_attention_heads=4 if small else 40, num_key_value_heads=2 if small else 8,
        head_dim=64 if small else 128, plt_window_size=[64, 0],
        plt_emb_scale=0.707, plt_hidden_scale=0.053, plt_normalize_per_loop=True,
        plt_gate_use_hidden_states=True, eos_token_id=[2], max_position_embeddings=131072,
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(DEVICE):
        model = IQuestPLTCoderForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    return model


def make_engine(model, num_loops: int, mode: str, max_num_seqs: int, max_model_len: int, graph_sizes,
                async_scheduling: bool | None = None):
    from loopcoder.model_server.engine import EngineConfig, LLMEngine

    model.config.num_loops = num_loops
    cfg = EngineConfig(model="bench", device=DEVICE, num_loops=num_loops, max_num_seqs=max_num_seqs,
                       max_model_len=max_model_len, max_num_batched_tokens=8192, decode_mode=mode,
                       graph_batch_sizes=graph_sizes, max_waiting=10_000, async_scheduling=async_scheduling)
    return LLMEngine(model, None, cfg)


def graph_gpu_ms(runner, batch: int, replays: int = 20) -> float | None:
    """GPU time of one decode graph (the size ``batch`` pads to), replayed back to back, by CUDA events:
    a step's forward when the host never makes the device wait."""
    size = next((n for n in sorted(runner.graphs) if n >= batch), None)
    if size is None:
        return float("nan")
    graph = runner.graphs[size][0]
    for _ in range(3):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _sync_time(fn):
    _sync()
    t0 = time.perf_counter()
    out = fn()
    _sync()
    return time.perf_counter() - t0, out


def decode_step_ms(engine, batch: int, context: int, steps: int, graph: bool = False):
    """Wall time per decode step with ``batch`` requests at about ``context`` tokens each: ``steps``
    step() calls back to back, synchronised before and after. With ``graph``: (step ms, graph GPU ms) with
    the graph timed on the same requests' inputs."""
    from loopcoder.model_server.engine import SamplingParams

    params = SamplingParams(max_tokens=steps + 50, temperature=0, ignore_eos=True)
    gen = torch.Generator().manual_seed(batch)
    ids = [f"b{batch}-{i}" for i in range(batch)]
    for rid in ids:
        engine.submit(torch.randint(3, 70000, (context,), generator=gen).tolist(), params, rid)
    while engine.scheduler.waiting or engine._inbox or any(s.in_prefill for s in engine.scheduler.running):
        engine.step()
    for _ in range(3):  # warm-up decode steps
        engine.step()
    tokens = 0

    def run():
        nonlocal tokens
        for _ in range(steps):
            tokens += sum(len(e.token_ids) for e in engine.step())

    elapsed, _ = _sync_time(run)
    # every step emitted one token per request (the async engine's are one step late, as many)
    assert tokens == batch * steps, (tokens, batch * steps)
    gpu = graph_gpu_ms(engine.runner, batch) if graph else None
    for rid in ids:
        engine.abort(rid)
    engine.step()
    assert not engine.scheduler.running and engine._inflight is None, "requests left running"
    step = 1000 * elapsed / steps
    return (step, gpu) if graph else step


def ttft_ms(engine, prompt_len: int, repeats: int = 3) -> float:
    from loopcoder.model_server.engine import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
    times = []
    for i in range(repeats + 1):
        prompt = torch.randint(3, 70000, (prompt_len,), generator=torch.Generator().manual_seed(i)).tolist()

        def run():
            engine.submit(prompt, params, f"ttft{i}")
            while True:
                if any(e.token_ids for e in engine.step()):
                    return

        elapsed, _ = _sync_time(run)
        if i:  # the first run compiles kernels for new shapes
            times.append(elapsed)
    return 1000 * statistics.median(times)


def measure_bandwidth() -> tuple[float, float]:
    """(copy, read-only) device memory bandwidth in bytes/s: the best of 20 timed passes over 2 GiB each
    (the roofline is an upper bound: the fastest pass is the bandwidth the GPU showed it can reach; two
    runs on the H200 gave medians 5-8% apart)."""
    buf = torch.randint(0, 255, (2 * 1024 ** 3 if DEVICE == "cuda" else 16 * 1024 ** 2,), dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(buf)
    for _ in range(3):
        dst.copy_(buf)
    copy_s = min(_sync_time(lambda: dst.copy_(buf))[0] for _ in range(20))
    # Read-only: a sum over the buffer reads every byte once and writes nothing; the faster of an int32
    # and a float32 reduction (both as views of the same bytes) is taken.
    read_s = float("inf")
    for fn in (lambda: buf.view(torch.int32).sum(dtype=torch.int64), lambda: buf.view(torch.float32).sum()):
        for _ in range(3):
            fn()
        read_s = min(read_s, min(_sync_time(fn)[0] for _ in range(20)))
    del dst
    return 2 * buf.numel() / copy_s, buf.numel() / read_s


def kv_bytes_per_token(engine, context: int) -> float:
    r = engine.runner
    return (r.kv_bytes_per_token() * context + r.per_request_bytes()) / context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/engine-h100.json")
    ap.add_argument("--layers", type=int, default=14)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--short-context", type=int, default=1024, help="context of the R-ratio measurements")
    ap.add_argument("--no-async-scheduling", dest="async_scheduling", action="store_false",
                    help="measure everything with async scheduling off (default: on, and R1/R2 both ways)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: a dry run of the script on a small shape (checks the code, measures nothing useful)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device

    model = build_model(args.layers)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    results: dict[str, float] = {}
    engines = {
        "R1": (1, "fused"),
        "R2": (2, "fused"),
        "R2-sequential": (2, "sequential"),
    }
    for name, (loops, mode) in engines.items():
        t0 = time.perf_counter()
        engine = make_engine(model, loops, mode, max_num_seqs=64, max_model_len=2048 + 2 * args.steps + 128,
                             graph_sizes=[1, 32, 64], async_scheduling=args.async_scheduling)
        print(f"[{name}] engine ready in {time.perf_counter() - t0:.1f}s", flush=True)
        for batch in (1, 32):
            if name != "R2-sequential" and args.async_scheduling:
                # the same engine, async scheduling off then on (the setting may change between steps
                # when nothing is in flight)
                for label, on in (("sync", False), ("async", True)):
                    engine.async_scheduling = on
                    step, gpu = decode_step_ms(engine, batch, args.short_context, args.steps, graph=True)
                    results[f"{name}.{label}.decode_ms.b{batch}"] = step
                    results[f"{name}.{label}.graph_gpu_ms.b{batch}"] = gpu
                    results[f"{name}.{label}.host_gap_ms.b{batch}"] = step - gpu
                    results[f"{name}.{label}.tok_s.b{batch}"] = batch * 1000 / step
                    print(f"[{name}] {label} batch {batch}: {step:.3f} ms/step, graph {gpu:.3f} ms, "
                          f"host gap {step - gpu:.3f} ms", flush=True)
                results[f"{name}.decode_ms.b{batch}"] = results[f"{name}.async.decode_ms.b{batch}"]
            else:
                results[f"{name}.decode_ms.b{batch}"] = decode_step_ms(engine, batch, args.short_context, args.steps)
            print(f"[{name}] batch {batch}: {results[f'{name}.decode_ms.b{batch}']:.3f} ms/step", flush=True)
        results[f"{name}.kv_bytes_per_token_32k"] = kv_bytes_per_token(engine, 32768)
        if name == "R2":
            results["R2.ttft_ms.prompt1024"] = ttft_ms(engine, 1024)
            step = decode_step_ms(engine, 64, 2048, max(10, args.steps // 2))
            results["R2.decode_ms.b64.ctx2048"] = step
            results["R2.throughput_tok_s.b64.ctx2048"] = 64 * 1000 / step
            print(f"[R2] ttft {results['R2.ttft_ms.prompt1024']:.1f} ms; b64@2K {step:.2f} ms/step", flush=True)
        del engine
        gc.collect()
        if DEVICE == "cuda":
            torch.cuda.empty_cache()

    r = results
    r["R2.decode_tok_s.b1"] = 1000 / r["R2.decode_ms.b1"]
    r["roofline_tok_s.b1"] = None
    ratios = {
        "R2_over_R1.b1": r["R2.decode_ms.b1"] / r["R1.decode_ms.b1"],
        "R2_over_R1.b32": r["R2.decode_ms.b32"] / r["R1.decode_ms.b32"],
        "sequential_over_fused.b1": r["R2-sequential.decode_ms.b1"] / r["R2.decode_ms.b1"],
        "sequential_over_fused.b32": r["R2-sequential.decode_ms.b32"] / r["R2.decode_ms.b32"],
        "kv_bytes_R2_over_R1.32k": r["R2.kv_bytes_per_token_32k"] / r["R1.kv_bytes_per_token_32k"],
    }
    # Roofline: every weight read once per step, at the bandwidth measured on this GPU in this run: copy
    # bandwidth (bytes read + written, what issue 5's target used) and read-only bandwidth (one pass of a
    # sum over the buffer: a decode step only reads weights, so this is the tighter roofline).
    bandwidth, read_bandwidth = measure_bandwidth()
    r["roofline_tok_s.b1"] = bandwidth / weight_bytes
    r["roofline_read_tok_s.b1"] = read_bandwidth / weight_bytes
    ratios["R2_b1_share_of_copy_roofline"] = r["R2.decode_tok_s.b1"] / r["roofline_tok_s.b1"]
    ratios["R2_b1_share_of_read_roofline"] = r["R2.decode_tok_s.b1"] / r["roofline_read_tok_s.b1"]
    if args.async_scheduling:
        for name in ("R1", "R2"):
            for label in ("sync", "async"):
                tok_s = r[f"{name}.{label}.tok_s.b1"]
                ratios[f"{name}.{label}.b1_share_of_copy_roofline"] = tok_s / r["roofline_tok_s.b1"]
                ratios[f"{name}.{label}.b1_share_of_read_roofline"] = tok_s / r["roofline_read_tok_s.b1"]
                # the decode graph alone, as if the host cost nothing
                ratios[f"{name}.{label}.b1_graph_share_of_read_roofline"] = (
                    1000 / r[f"{name}.{label}.graph_gpu_ms.b1"] / r["roofline_read_tok_s.b1"])
            for batch in (1, 32):
                ratios[f"{name}.async_speedup.b{batch}"] = (r[f"{name}.sync.decode_ms.b{batch}"]
                                                            / r[f"{name}.async.decode_ms.b{batch}"])
    targets = {
        "R2.decode_tok_s.b1 >= 170": r["R2.decode_tok_s.b1"] >= 170,
        "R2.decode b1 >= 90% of the copy roofline": ratios["R2_b1_share_of_copy_roofline"] >= 0.9,
        "R2_over_R1.b1 <= 1.05": ratios["R2_over_R1.b1"] <= 1.05,
        "R2_over_R1.b32 <= 1.10": ratios["R2_over_R1.b32"] <= 1.10,
        "sequential_over_fused.b1 >= 1.7": ratios["sequential_over_fused.b1"] >= 1.7,
        "kv_bytes_R2_over_R1.32k <= 1.01": ratios["kv_bytes_R2_over_R1.32k"] <= 1.01,
    }
    if args.async_scheduling:
        for name in ("R1", "R2"):
            targets[f"{name}.async.host_gap_ms.b1 < 0.2"] = r[f"{name}.async.host_gap_ms.b1"] < 0.2
            targets[f"{name}.async.host_gap_ms.b32 < 0.5"] = r[f"{name}.async.host_gap_ms.b32"] < 0.5
    report = {
        "command": "python " + " ".join(sys.argv),
        "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (dry run, small shape)",
        "torch": torch.__version__,
        "triton": __import__("triton").__version__ if DEVICE == "cuda" else None,
        "python": platform.python_version(),
        "model": {"layers": args.layers, "hidden": 5120, "heads": "40/8", "head_dim": 128, "intermediate": 27648,
                  "vocab": 76800, "dtype": "bfloat16", "weights_bytes": weight_bytes, "plt_window": 65},
        "copy_bandwidth_bytes_s": bandwidth,
        "read_bandwidth_bytes_s": read_bandwidth,
        "short_context_tokens": args.short_context,
        "async_scheduling": args.async_scheduling,
        "step_time": "wall time of --steps back-to-back LLMEngine.step() calls / steps (synchronised before and "
                     "after); host_gap = step - graph_gpu (the decode graph replayed back to back, CUDA events)",
        "results": r,
        "ratios": ratios,
        "targets_met": targets,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({"ratios": ratios, "targets_met": targets, "tok_s_b1": r["R2.decode_tok_s.b1"],
                      "roofline": r["roofline_tok_s.b1"],
                      "roofline_read": r["roofline_read_tok_s.b1"]}, indent=1))


if __name__ == "__main__":
    main()
