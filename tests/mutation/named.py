"""The hand-written mutations of issue 9 ("Tests that let bugs through"), each run against its tests.

    .venv/bin/python tests/mutation/named.py [NAME ...] [--workdir DIR] [--out JSON]

Each mutation replaces one exact text (which must occur exactly once) in a scratch copy of the working
tree, runs the listed tests there (pytest, no -x, so every failing test is listed), records which failed,
and restores the file with ``git checkout``. A mutation that fails no test is reported as SURVIVED and
makes the script exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, copy_tree, make_shim  # noqa: E402

E = "model_server/engine/"
# The tests written to kill these mutations (the older suite's verdict is in docs/testing.md).
ENGINE_TESTS = ["tests/engine/test_engine_logits.py"]
SAMPLING_TESTS = ["tests/engine/test_engine_sampling.py"]
REAL_SERVER = ["tests/api/test_api_real_engine.py", "tests/api/test_api_app_unit.py"]
SPEC = ["tests/model/test_plt_forward.py::test_forward_matches_spec_equations",
        "tests/model/test_plt_forward.py::test_bf16_close_to_float64_spec"]
MODEL_TESTS = SPEC + ["tests/model/test_rope_scaling.py"]
# the subprocess test exists only when triton was imported before the kernels' conftest ran
PREIMPORT_TRITON = "import triton"

# name: (file, old text, new text, tests)
MUTATIONS = {
    "fused-decode-gate-inverted": (
        E + "model_runner.py", "torch.stack([gate(h[r * batch:(r + 1) * batch], q[r * batch:(r + 1) * batch, :, None])",
        "torch.stack([1 - gate(h[r * batch:(r + 1) * batch], q[r * batch:(r + 1) * batch, :, None])", ENGINE_TESTS),
    "sequential-decode-gate-inverted": (
        E + "model_runner.py", "out = gate_mix(g, out, local)", "out = gate_mix(1 - g, out, local)", ENGINE_TESTS),
    "chunked-prefill-carry-zeroed": (
        E + "model_runner.py", "shifted = shift_packed(loop_out[0], first, old_carry[r - 1])[None]",
        "shifted = shift_packed(loop_out[0], first, 0 * old_carry[r - 1])[None]", ENGINE_TESTS),
    "sampler-temperature-ignored": (E + "sampler.py", "scaled = logits / t", "scaled = logits", SAMPLING_TESTS),
    "sampler-top-p-ignored": (
        E + "sampler.py", "drop |= (probs.cumsum(-1) - probs) >= ps", "drop |= drop", SAMPLING_TESTS),
    "sampler-top-p-keeps-one-more": (
        E + "sampler.py", "drop |= (probs.cumsum(-1) - probs) >= ps", "drop |= (probs.cumsum(-1) - 2 * probs) >= ps",
        SAMPLING_TESTS),
    "sampler-top-k-ignored": (E + "sampler.py", "drop = rank >= ks[:, None]", "drop = rank < 0", SAMPLING_TESTS),
    "sampler-top-k-off-by-one": (E + "sampler.py", "drop = rank >= ks[:, None]", "drop = rank > ks[:, None]",
                                 SAMPLING_TESTS),
    "engine-eos-never-stops": (
        E + "llm_engine.py", "frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_ids)",
        "frozenset(params.stop_token_ids)", SAMPLING_TESTS),
    "server-tool-parsing-always-on": (
        "model_server/api/server.py", "ChatOutputParser(self.prompt.starts_in_think, self.prompt.parse_tools, self.prompt.max_calls)",
        "ChatOutputParser(self.prompt.starts_in_think, True, self.prompt.max_calls)", REAL_SERVER),
    "server-parallel-tool-calls-ignored": (
        "model_server/api/prompts.py", "None if request.parallel_tool_calls else 1", "None", REAL_SERVER),
    "server-only-first-tool-call": (
        "model_server/api/output_parsers.py", "if self.max_calls is None or self.num_calls < self.max_calls:",
        "if self.num_calls < 1:", REAL_SERVER),
    "server-chat-without-auth": (
        "model_server/api/server.py",
        '@app.post("/v1/chat/completions", dependencies=[Depends(authorize)])', '@app.post("/v1/chat/completions")',
        REAL_SERVER),
    "server-engine-failure-ignored": (
        "model_server/api/server.py", 'if delta is not None and delta.finish_reason == "error":',
        "if False:", REAL_SERVER),
    "rmsnorm-weight-dropped": (
        "model_server/plt/plt_math.py", "return weight * x.to(dtype)", "return x.to(dtype)", MODEL_TESTS),
    "rmsnorm-sum-not-mean": (
        "model_server/plt/plt_math.py", "x.pow(2).mean(-1, keepdim=True)", "x.pow(2).sum(-1, keepdim=True)",
        MODEL_TESTS),
    "mlp-relu-not-silu": (
        "model_server/plt/modeling.py", "self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))",
        "self.down_proj(F.relu(self.gate_proj(x)) * self.up_proj(x))", MODEL_TESTS),
    "rope-attention-factor-dropped": (
        "model_server/plt/modeling.py", "return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)",
        "return emb.cos().to(dtype), emb.sin().to(dtype)", MODEL_TESTS),
    "rope-scaling-type-ignored": (
        "model_server/plt/modeling.py", 'rope_type = self.config.rope_parameters.get("rope_type", "default")',
        'rope_type = "default"', MODEL_TESTS),
    "local-branch-off": (
        "model_server/plt/modeling.py", "return self._out(gate_mix(g, o_glob, o_loc))", "return self._out(o_glob)",
        SPEC),
    "kernel-subprocess-all-skipped": (
        "tests/kernels/test_gswa_interpret.py", 'env = dict(os.environ, TRITON_INTERPRET="1", **{RERUN_MARK: "1"})',
        'env = dict(os.environ, TRITON_INTERPRET="0", **{RERUN_MARK: "1"})',
        [PREIMPORT_TRITON, "tests/kernels/test_gswa_interpret.py"]),
}


def run_one(name: str, repo: Path, env: dict) -> dict:
    rel, old, new, tests = MUTATIONS[name]
    path = repo / rel
    text = path.read_text()
    count = text.count(old)
    if count != 1:
        raise SystemExit(f"{name}: the text to replace occurs {count} times in {rel}")
    line = text[:text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new))
    started = time.monotonic()
    try:
        args = ["-q", "-p", "no:cacheprovider", "-rf", "--timeout", "900", *[t for t in tests if t != PREIMPORT_TRITON]]
        prelude = "import triton; " if PREIMPORT_TRITON in tests else ""
        proc = subprocess.run([sys.executable, "-c", f"import sys, pytest; {prelude}sys.exit(pytest.main({args!r}))"],
                              cwd=repo, env=env, capture_output=True, text=True)
    finally:
        path.write_text(text)
    failed = sorted(set(re.findall(r"^FAILED (\S+)", proc.stdout, re.M)))
    errors = sorted(set(re.findall(r"^ERROR (\S+)", proc.stdout, re.M)))
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"name": name, "file": rel, "line": line, "old": old, "new": new, "tests_run": tests,
            "failed": failed + errors, "summary": summary, "seconds": round(time.monotonic() - started),
            "killed": proc.returncode != 0 and bool(failed + errors)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"default: all of {', '.join(MUTATIONS)}")
    ap.add_argument("--workdir", default="/tmp/loopcoder-named-mutations")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    workdir = Path(args.workdir).resolve()
    repo = workdir / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    copy_tree(repo)
    env = dict(os.environ, PYTHONPATH=str(make_shim(workdir, repo)), PYTHONDONTWRITEBYTECODE="1")
    results = []
    for name in args.names or list(MUTATIONS):
        result = run_one(name, repo, env)
        results.append(result)
        verdict = "killed by " + ", ".join(result["failed"]) if result["killed"] else "SURVIVED"
        print(f"{name} ({result['file']}:{result['line']}, {result['seconds']} s): {verdict}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["killed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
