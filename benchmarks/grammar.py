"""Cost of grammar-constrained decoding per decode step: full ``LLMEngine.step()`` time with and without a
grammar, at batch 1 and 32, plus the two parts of the mask on their own (host fill, device apply).

On CUDA (default): a LoopCoder-V2-shaped model with random bf16 weights (``--layers``, like
benchmarks/engine.py), CUDA graphs on, and a byte-level BPE of the model's full 76,800-token vocabulary
trained on CPython's sources (~20 s), because the mask's host cost grows with the vocabulary (the shipped
tokenizer has 4,096 tokens). On CPU (``--device cpu``): the tiny shape and the shipped tokenizer, a smoke
run of the same code, not a measurement of the GPU path.

Grammars: ``json_schema`` (tool arguments with an unbounded string, so a random model stays inside the
JSON for many tokens) and ``tool_call`` (the structural tag of a forced tool call, as the server builds it).
Requests whose grammar completes are replaced, and only decode steps with the full batch are timed.

    python benchmarks/grammar.py                       # CUDA; writes benchmarks/results/grammar-<gpu>.json
    python benchmarks/grammar.py --device cpu --out benchmarks/results/grammar-cpu-tiny.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"},
                                           "overwrite": {"type": "boolean"}},
          "required": ["path", "content", "overwrite"], "additionalProperties": False}


def grammars() -> dict:
    from loopcoder.model_server.api.prompts import ChatPrompt
    from loopcoder.model_server.api.protocol import ToolDefinition
    from loopcoder.model_server.api.structured import _spec, forced_call_format
    from loopcoder.model_server.engine import GrammarSpec

    tool = ToolDefinition(function={"name": "write_file", "parameters": SCHEMA})
    prompt = ChatPrompt("", [], "", False, True, None, "named")
    return {
        "none": None,
        "json_schema": GrammarSpec(kind="json_schema", value=json.dumps(SCHEMA)),
        "tool_call": _spec(forced_call_format([tool], prompt, "write_file")),
    }


def build(device: str, layers: int | None, vocab_tokens: int | None, max_batch: int, context: int):
    from loopcoder.model_server.engine import EngineConfig, LLMEngine
    from loopcoder.model_server.plt.checkpoint import make_config
    from loopcoder.model_server.plt.modeling import IQuestPLTCoderForCausalLM
    from loopcoder.model_server.plt.tokenizer import ASSET_DIR, load_tokenizer, train_tiny_tokenizer

    shape = "loopcoder-v2" if device == "cuda" else "tiny"
    config = make_config(shape, **({"num_hidden_layers": layers} if layers else {}))
    vocab_tokens = vocab_tokens or (config.vocab_size if device == "cuda" else 4096)
    if vocab_tokens == 4096:
        tokenizer, tok_source = load_tokenizer(ASSET_DIR), "shipped 4,096-token BPE"
    else:
        t0 = time.perf_counter()
        out = Path(tempfile.mkdtemp(prefix="bench-tokenizer-"))
        train_tiny_tokenizer(out, _utf8_sources(40_000_000), vocab_size=vocab_tokens)
        tokenizer = load_tokenizer(out)
        tok_source = f"byte-level BPE of {len(tokenizer)} tokens trained on CPython sources"
        print(f"tokenizer: {tok_source} in {time.perf_counter() - t0:.1f}s", flush=True)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = IQuestPLTCoderForCausalLM(config).eval()
    torch.set_default_dtype(previous)
    cfg = EngineConfig(model="bench", device=device, max_num_seqs=max_batch, max_model_len=context + 1024,
                       max_num_batched_tokens=max(8192, context), graph_batch_sizes=[1, max_batch],
                       max_waiting=10_000)
    return LLMEngine(model, tokenizer, cfg), shape, config, tok_source


def _utf8_sources(limit_bytes: int) -> list[Path]:
    files, total = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            f.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        files.append(f)
        total += f.stat().st_size
        if total >= limit_bytes:
            break
    return files


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_ms(engine, device: str, grammar, batch: int, context: int, steps: int, vocab: int) -> dict:
    """Median time of full-batch decode steps; finished requests are replaced (their prefill steps are
    not timed)."""
    from loopcoder.model_server.engine import SamplingParams

    params = SamplingParams(max_tokens=100_000, temperature=1.0, grammar=grammar, ignore_eos=grammar is None)
    gen = torch.Generator().manual_seed(batch)
    live: set[str] = set()
    counter = 0

    def top_up():
        nonlocal counter
        while len(live) < batch:
            rid = f"r{counter}"
            counter += 1
            engine.submit(torch.randint(20, vocab, (context,), generator=gen).tolist(), params, rid)
            live.add(rid)

    times, warm, replaced = [], 3, 0
    while len(times) < steps:
        top_up()
        sched = engine.scheduler
        full_decode = (not engine._inbox and not sched.waiting and len(sched.running) == batch
                       and not any(s.in_prefill for s in sched.running))
        _sync(device)
        t0 = time.perf_counter()
        events = engine.step()
        _sync(device)
        elapsed = time.perf_counter() - t0
        for e in events:
            if e.finished:
                live.discard(e.request_id)
                replaced += 1
        if full_decode:
            if warm:
                warm -= 1
            else:
                times.append(elapsed)
    for rid in live:
        engine.abort(rid)
    while engine.has_work():
        engine.step()
    return {"step_ms": 1000 * statistics.median(times), "p90_ms": 1000 * sorted(times)[int(0.9 * len(times))],
            "timed_steps": len(times), "requests_replaced": replaced}


def mask_parts_ms(engine, device: str, grammar, batch: int, repeats: int = 50) -> dict:
    """The mask on its own for ``batch`` fresh matchers: host fill (xgrammar) and device apply."""
    from loopcoder.model_server.engine.grammar import apply_token_bitmask

    matchers = [engine.grammars.matcher(grammar) for _ in range(batch)]
    logits = torch.randn(batch, engine.vocab_size, device=device)
    fill, apply = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        bitmask = engine.grammars.fill_bitmask(matchers)
        fill.append(time.perf_counter() - t0)
        _sync(device)
        t0 = time.perf_counter()
        apply_token_bitmask(logits, bitmask)
        _sync(device)
        apply.append(time.perf_counter() - t0)
    return {"host_fill_ms": 1000 * statistics.median(fill), "device_apply_ms": 1000 * statistics.median(apply)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--out", default=None, help="default benchmarks/results/grammar-<gpu|cpu-tiny>.json")
    ap.add_argument("--layers", type=int, default=None, help="model layers (default: the shape's)")
    ap.add_argument("--vocab-tokens", type=int, default=None,
                    help="tokenizer size (default: the model's vocabulary on CUDA, the shipped 4,096 on CPU)")
    ap.add_argument("--context", type=int, default=None, help="prompt tokens per request (1024 cuda, 32 cpu)")
    ap.add_argument("--steps", type=int, default=None, help="timed decode steps per case (40 cuda, 20 cpu)")
    ap.add_argument("--batches", default="1,32")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; use --device cpu for the tiny smoke run")
    context = args.context or (1024 if args.device == "cuda" else 32)
    steps = args.steps or (40 if args.device == "cuda" else 20)
    batches = [int(b) for b in args.batches.split(",")]

    t0 = time.perf_counter()
    engine, shape, config, tok_source = build(args.device, args.layers, args.vocab_tokens, max(batches), context)
    print(f"engine ready in {time.perf_counter() - t0:.1f}s ({shape}, {config.num_hidden_layers} layers)", flush=True)
    vocab = min(len(engine.tokenizer), engine.vocab_size)
    results: dict[str, dict] = {}
    for name, grammar in grammars().items():
        for batch in batches:
            key = f"{name}.b{batch}"
            results[key] = step_ms(engine, args.device, grammar, batch, context, steps, vocab)
            if grammar is not None:
                results[key].update(mask_parts_ms(engine, args.device, grammar, batch))
                base = results[f"none.b{batch}"]["step_ms"]
                results[key]["overhead_ms"] = results[key]["step_ms"] - base
                results[key]["overhead_ratio"] = results[key]["step_ms"] / base
            print(key, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results[key].items()}),
                  flush=True)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({platform.processor() or 'x86_64'})"
    from importlib.metadata import version

    report = {
        "command": "python " + " ".join(sys.argv),
        "device": device_name if args.device == "cuda" else
        f"{device_name}: tiny shape smoke run of the same code, NOT the GPU measurement",
        "torch": torch.__version__, "xgrammar": version("xgrammar"),
        "python": platform.python_version(),
        "model": {"shape": shape, "layers": config.num_hidden_layers, "hidden": config.hidden_size,
                  "vocab": config.vocab_size, "dtype": str(next(engine.model.parameters()).dtype)},
        "tokenizer": tok_source, "context_tokens": context, "cuda_graphs": args.device == "cuda",
        "grammars": {"json_schema": SCHEMA, "tool_call": "forced named call of write_file(SCHEMA)"},
        "results": results,
    }
    out = args.out or ("benchmarks/results/grammar-"
                       + (torch.cuda.get_device_name().split()[-1].lower() if args.device == "cuda" else "cpu-tiny")
                       + ".json")
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
