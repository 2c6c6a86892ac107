"""Edit-focused training samples for LoopCoder-Nano (docs/nano.md, "Edit-focused continued training").

The held-out table shows the model failing at the edit: most `str_replace` calls are refused (identical
strings, or an `old_str` that is not there). This script takes a training run's samples (`samples.jsonl.gz`
of `loopcoder train`, one sample per teacher answer) and writes a mix for continued training from the shipped
delta (`loopcoder train --init-delta`):

- every episode's final edit: its last `str_replace` answer with no `undo` after it. Teacher episodes were kept
  only when they resolved, so that edit is the fix. Deliberate wrong first edits are left out.
- as many other answers, drawn with ``--seed``, so the routine around the edit is not forgotten.

    python benchmarks/nano_edit_mix.py .device/runs/d4-r2/samples.jsonl.gz -o .device/edit/edit-mix.jsonl.gz
    loopcoder train --data .device/edit/edit-mix.jsonl.gz --out RUN --loops 2 --steps 300 --lr 2e-4 \\
        --init-delta model_server/training/assets/nano-delta
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

from loopcoder.model_server.training.data import final_edits, read_samples


def edit_mix(samples: list[dict], seed: int = 0, others_per_edit: float = 1.0) -> tuple[list[dict], dict]:
    edits = final_edits(samples)
    chosen = set(edits)
    rest = [i for i in range(len(samples)) if i not in chosen]
    k = min(len(rest), round(len(edits) * others_per_edit))
    picked = sorted(edits + random.Random(seed).sample(rest, k))
    stats = {"samples_in": len(samples), "episodes": len({s["source"]["file"] for s in samples}),
             "final_edits": len(edits), "others": k, "samples_out": len(picked)}
    return [samples[i] for i in picked], stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("samples", help="a run's samples.jsonl.gz (or a plain .jsonl sample file)")
    ap.add_argument("-o", "--out", required=True, help="the mix, gzipped (.jsonl.gz)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--others-per-edit", type=float, default=1.0)
    args = ap.parse_args()
    samples = read_samples(args.samples)
    if any("source" not in s or "file" not in s["source"] for s in samples):
        raise SystemExit(f"error: {args.samples}: samples without source.file (not from `loopcoder train`)")
    mix, stats = edit_mix(samples, args.seed, args.others_per_edit)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for s in mix:
            f.write((json.dumps(s, ensure_ascii=False) + "\n").encode())
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
