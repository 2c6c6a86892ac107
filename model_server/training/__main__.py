"""Continue a prepared run where only torch and the model server are installed (a GPU host):

    python -m loopcoder.model_server.training RUN_DIR [--max-minutes M] [--device cuda] [--gguf PATH]

`loopcoder train --prepare-only` writes RUN_DIR (it needs the agent and its tools to read trajectories);
this runs its steps exactly as `loopcoder train --out RUN_DIR --resume` does (docs/nano.md).
"""
from __future__ import annotations

import argparse
import sys

from ..errors import ModelError
from .trainer import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loopcoder.model_server.training")
    parser.add_argument("run", help="run directory written by `loopcoder train --prepare-only`")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--gguf", default=None, help="where the base GGUF lies here (same sha256 as the run's)")
    args = parser.parse_args(argv)

    def progress(entry: dict) -> None:
        if entry["step"] % 10 == 0 or entry["step"] == entry["total"]:
            print(f"step {entry['step']}/{entry['total']} loss {entry['loss']:.4f} "
                  f"{entry['tokens_per_s']:.0f} tok/s {entry['elapsed_s']:.0f} s", flush=True)

    try:
        result = train(args.run, max_minutes=args.max_minutes, device=args.device, gguf=args.gguf, progress=progress)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = "finished" if result.finished else "stopped (--max-minutes); run again to continue"
    print(f"{state}: step {result.step} of {result.total_steps}, last loss {result.last_loss}, "
          f"{result.tokens_per_s or 0:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
