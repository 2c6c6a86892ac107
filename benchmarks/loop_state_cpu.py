"""Loop-state snapshots on CPU: an agent-like conversation on LoopCoder-Nano with snapshots on and off.

Three turns, each prompt the previous prompt, its answer and new tokens (random ids): 1,500 tokens, then
+300, then +300, 64 greedy tokens each. The same engine class runs them with prefix caching on and
loop-state snapshots on (``loop_state_snapshots=32``) and off (``0``: the recompute tail, the exact path
the engine had before), side by side: each turn runs on every engine before the next. ``--uncached``
adds an engine with prefix caching off (every prompt computed in full) as the reference instead of the
tail. Reported per turn and engine: wall seconds, prompt tokens computed, hit tokens recomputed, snapshot
hits, and whether the generated tokens equal the reference's. One PyTorch thread (the machine is shared
with other jobs; the timings are still noisy).

    .venv/bin/loopcoder model build-default --out /tmp/snap-nano
    .venv/bin/python benchmarks/loop_state_cpu.py --model /tmp/snap-nano --out benchmarks/results/loop-state-cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from loopcoder.model_server.engine import EngineConfig, LLMEngine, SamplingParams
from loopcoder.model_server.plt.checkpoint import load_checkpoint

VARIANTS = {  # name: EngineConfig fields
    "snapshots": {"enable_prefix_caching": True, "loop_state_snapshots": 32},
    "tail": {"enable_prefix_caching": True, "loop_state_snapshots": 0},
    "no_prefix_cache": {"enable_prefix_caching": False},
}


def build(path: str, max_model_len: int, **fields) -> LLMEngine:
    cfg = EngineConfig(model=path, max_num_seqs=1, max_model_len=max_model_len, **fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tokenizer = load_checkpoint(path, dtype=cfg.dtype, device="cpu")
    return LLMEngine(model, tokenizer, cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="/tmp/snap-nano")
    parser.add_argument("--out", default="benchmarks/results/loop-state-cpu.json")
    parser.add_argument("--first", type=int, default=1500, help="first prompt's tokens")
    parser.add_argument("--extra", type=int, default=300, help="new tokens per later turn")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--uncached", action="store_true", help="also run prefix caching off (the reference)")
    args = parser.parse_args()
    variants = {name: fields for name, fields in VARIANTS.items() if args.uncached or name != "no_prefix_cache"}
    reference = "no_prefix_cache" if args.uncached else "tail"
    torch.set_num_threads(1)

    total = args.first + (args.turns - 1) * args.extra + args.turns * args.max_tokens
    max_model_len = -(-(total + 16) // 256) * 256
    engines = {name: build(args.model, max_model_len, **fields) for name, fields in variants.items()}
    some = next(iter(engines.values()))
    gen = torch.Generator().manual_seed(args.seed)
    fresh = [torch.randint(0, some.vocab_size, (args.first if k == 0 else args.extra,), generator=gen).tolist()
             for k in range(args.turns)]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True)
    contexts = {name: [] for name in engines}
    answers = {name: [] for name in engines}
    turns = []
    for k in range(args.turns):
        row = {"turn": k + 1, "engines": {}}
        for name, engine in engines.items():
            context = contexts[name] = contexts[name] + (answers[name][-1] if answers[name] else []) + fresh[k]
            before = engine.stats()
            started = time.perf_counter()
            [answer] = engine.generate([context], params)
            seconds = time.perf_counter() - started
            after = engine.stats()
            answers[name].append(answer)
            row["engines"][name] = {
                "seconds": round(seconds, 3),
                "prompt_tokens": len(context),
                "computed_prompt_tokens": after.prompt_tokens_total - before.prompt_tokens_total,
                "hit_tokens": after.prefix_cache_hit_tokens_total - before.prefix_cache_hit_tokens_total,
                "recomputed_tokens": (after.prefix_cache_recomputed_tokens_total
                                      - before.prefix_cache_recomputed_tokens_total),
                "snapshot_hits": after.prefix_cache_snapshot_hits_total - before.prefix_cache_snapshot_hits_total,
                "tokens_equal_reference": None,
            }
            print(f"turn {k + 1} {name:16s} {seconds:7.2f} s  {row['engines'][name]}", flush=True)
        for name in engines:
            row["engines"][name]["tokens_equal_reference"] = answers[name][-1] == answers[reference][-1]
        turns.append(row)

    snap = engines["snapshots"]
    runner = snap.runner
    result = {
        "command": ".venv/bin/python " + " ".join(sys.argv),
        "model": args.model,
        "shape": {"layers": runner.num_layers, "hidden": runner.hidden, "num_loops": snap.spec.num_loops,
                  "window": snap.spec.window, "kv_heads": runner.num_kv_heads, "head_dim": runner.head_dim,
                  "dtype": str(runner.dtype)},
        "recompute_tail": snap.recompute_tail,
        "snapshot_bytes": runner.per_request_bytes(),
        "variants": variants,
        "reference": reference,
        "workload": {"first": args.first, "extra": args.extra, "turns": args.turns, "max_tokens": args.max_tokens,
                     "seed": args.seed, "ids": "random", "sampling": "greedy", "max_model_len": max_model_len},
        "torch_threads": torch.get_num_threads(),
        "threads_note": "torch.set_num_threads(1): the 2-core machine is shared with other jobs; timings are noisy",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__},
        "turns": turns,
        "all_tokens_identical": all(e["tokens_equal_reference"] for t in turns for e in t["engines"].values()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({t["turn"]: {n: (e["seconds"], e["recomputed_tokens"]) for n, e in t["engines"].items()}
                      for t in turns}))


if __name__ == "__main__":
    main()
