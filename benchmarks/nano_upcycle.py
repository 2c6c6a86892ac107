"""Code perplexity of the Nano base at R=1 and at R=2 right after upcycling, for several gate inits; writes JSON.

    .venv/bin/python benchmarks/nano_upcycle.py [--tokens 2048] [--out benchmarks/results/nano-upcycle.json]

Held-out text: CPython's own Lib/textwrap.py (the first --tokens tokens of it, in windows of 1,024), code
the model has surely seen in some form but that is no part of this project's training data. Rows: R=1;
R=2 with the shipped upcycling (a=1, b=0, gate W=0, gate bias 5) and gate biases 10 and 2; R=2 as a fresh
init would leave it (the released scales a=0.707, b=0.053, gate W ~ N(0, 0.02), bias 0).
"""
from __future__ import annotations

import argparse
import json
import sysconfig
import time
import warnings
from pathlib import Path

import torch

from loopcoder.model_server.training.base_model import build_base_model, write_tokenizer
from loopcoder.model_server.training.evaluate import perplexity


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    source = Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"
    rows = []
    model, base = build_base_model(1)
    import tempfile

    from loopcoder.model_server.plt.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(base, Path(tmp))
        ids = load_tokenizer(tmp)(source.read_text(), add_special_tokens=False).input_ids[:args.tokens]

    def row(name, m):
        start = time.monotonic()
        rows.append({"model": name, "perplexity": round(perplexity(m, ids), 4),
                     "seconds": round(time.monotonic() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)

    row("R=1", model)
    for bias in (5.0, 10.0, 2.0):
        row(f"R=2 upcycled, gate bias {bias:g}" + (" (shipped)" if bias == 5.0 else ""),
            build_base_model(2, gate_bias=bias)[0])
    fresh, _ = build_base_model(2)
    fresh.config.plt_emb_scale, fresh.config.plt_hidden_scale = 0.707, 0.053
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in fresh.model.layers:
            gate = layer.self_attn.plt_gate
            gate.weight.copy_(torch.randn(gate.weight.shape, generator=gen) * 0.02)
            gate.bias.zero_()
    row("R=2 fresh gates (a=0.707, b=0.053, W~N(0,0.02), bias 0)", fresh)
    report = {"text": f"CPython {sysconfig.get_python_version()} Lib/textwrap.py, first {len(ids)} tokens, "
                      "windows of 1024", "rows": rows}
    text = json.dumps(report, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
