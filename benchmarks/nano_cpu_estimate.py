"""Estimated server CPU seconds per episode of LoopCoder-Nano on this CPU, for episodes that ran elsewhere.

The held-out table (issue 17, docs/nano.md) ran its 250 episodes on a GPU host, so its "server CPU s" is
not the cost on a CPU-only machine, and running them here is days of this 2-core CPU. This script estimates
that cost from what each episode recorded and from per-token costs measured here.

Method:

1. **The prompts each request sent.** A trajectory records only the messages added since the previous
   request. The history is rebuilt by ``agent.requests.episode_requests`` (the agent's own
   ``ContextWindow`` elides old tool output before every request; a history folded into a summary is
   rebuilt from the summary message and the recorded message count), and rendered and tokenized with the
   server's own ``render_chat``. The token count is checked against the recorded ``prompt_tokens``.
2. **What the server computed for each request.** Cached (prefix-hit) prompt tokens are recorded nowhere
   (neither the trajectory nor the server log), so the server's prefix cache is replayed: the engine's own
   ``Scheduler``, ``BlockManager`` and ``LoopStateStore`` (block size 16, ``loopcoder serve``'s CPU
   settings) run each episode's prompts in order with no model behind them, which gives each request's
   prefill chunks (start, length) and its decode steps. Two things of the server matter here: the chat
   template's generation prompt ends in an empty think block that the history does not repeat, so a turn
   diverges from the previous prompt a few tokens before its end (the answer's K/V is never reused), and
   at R=2 a hit that does not reach a loop-state snapshot (it never does then: the snapshot sits at the
   previous prompt's end, past the divergence) recomputes the last ``recompute_tail`` = 1,921 positions
   of the hit (scheduler.py; window 65, 30 layers). Elided tool output also cuts the hit where it changed.
3. **A cost model measured here** (``measure``): the real server (``loopcoder serve``, as ``nano_eval.py``
   starts it) on loopback, one request at a time over HTTP, token-id prompts with ``ignore_eos``, and the
   server process's CPU seconds (utime + stime from /proc, as ``nano_eval.py`` counts them) around each
   request. The requests follow an agent's pattern (a prompt extended, then a turn that diverges a few
   tokens before the previous end and adds new tokens, with decoding) over prefix lengths covering the
   episodes' prompts. The replay of step 2 runs the same requests, and its cached tokens must equal the
   server's ``usage.prompt_tokens_details.cached_tokens``. Each request's work is taken from that usage
   (the prompt from the cached tokens on, in chunks of 2,048, then one decode step per generated token
   after the first). Per loop count, least squares (non-negative) fits

       CPU s = e * requests + a * prefill tokens + b * prefill (query, key) pairs
               + c * decoded tokens + d * sum of decode context lengths

   where a chunk of n tokens starting at s has n * s + n (n + 1) / 2 pairs.
4. ``estimate``: the model applied to every episode of the held-out table (each configuration's episodes
   in run order through one replayed server, as ``--workers 1`` would run them). ``validate``: the same on
   the episodes that did run on this CPU, against the server CPU seconds measured there (per run: the
   measurement is per server process), and, where a run's instances are among the table's, the table's
   own (GPU) episodes of those instances against the same measurement.

    python benchmarks/nano_cpu_estimate.py measure     # about 6 minutes of this CPU, R=1 and R=2
    python benchmarks/nano_cpu_estimate.py estimate
    python benchmarks/nano_cpu_estimate.py validate    # after estimate (it reads the table's estimates)

Each step updates ``benchmarks/results/nano-cpu-estimate.json`` (``--results``). A new ``measure`` adds a pass
(``measures``) and keeps the earlier ones; the cost model (``model``) is fitted on the requests of all passes
together, and ``estimate`` and ``validate`` also report what each pass alone gives (the spread between
passes); ``fit`` fits the stored passes again without measuring.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/nano-cpu-estimate.json"
FEATURES = ("requests", "prefill_tokens", "prefill_pairs", "decode_tokens", "decode_context")
CHECKPOINTS = {1: ".cache/d4-r1", 2: ".cache/nano"}  # the checkpoints measured, by loop count
HELD_OUT = "/work/nanodata/eval5/eval"
# the held-out table's configurations: checkpoint (benchmarks/results/nano-eval5-heldout50.json's rows)
CONFIGS = {"base": ".cache/nano-base", "r1": ".cache/d4-r1", "r2": ".cache/nano", "r1-think": ".cache/d4-r1",
           "r2-think": ".cache/nano"}
# runs measured on this CPU (nano_eval.py's segments.jsonl): (name, run folder, checkpoint, what ran beside it,
# the held-out table's configuration of the same checkpoint and thinking[, True: the server had the history-end
# snapshots, so the replay has them too])
VALIDATION = [
    ("eval4-bundled r1", "/work/nanodata/eval4-bundled/r1", ".cache/d4-r1",
     "the R=2 run's server at the same time, CI for part of it", "r1"),
    ("eval4-demo r1", "/work/nanodata/eval4-demo/r1", ".cache/d4-r1", "not recorded", "r1"),
    ("cpu-cost base", "/tmp/ne/base", ".cache/nano-base", "the r1 run's server at the same time", "base"),
    ("cpu-cost r1", "/tmp/ne/r1", ".cache/d4-r1", "the base run's server at the same time", "r1"),
    ("cpu-think r1-think", "/work/nanodata/cpu-think/r1-think", ".cache/d4-r1",
     "the r2-think run's server at the same time", "r1-think"),
    ("cpu-think r2-think", "/work/nanodata/cpu-think/r2-think", ".cache/nano",
     "the r1-think run's server at the same time", "r2-think"),
    ("cpu-r2 history snapshots", "/work/nanodata/cpu-r2new/r2", ".cache/nano", "CI (.ci/run) for most of it", "r2",
     True),
]
UNSEEN = -1  # the id given to generated tokens in the replay: no prompt holds it


# -- 1. the prompts of an episode ---------------------------------------------------------------------

@dataclass
class Turn:
    """One model call of an episode as the server saw it."""

    prompt_ids: list[int]
    completion_tokens: int
    recorded_prompt_tokens: int
    history_tokens: int = 0  # the prompt's history before the generation prompt (ChatPrompt.history_tokens)

    @property
    def matches(self) -> bool:
        return len(self.prompt_ids) == self.recorded_prompt_tokens


def episode_bodies(path: str | Path) -> list:
    """The answered model calls of a trajectory (``agent.requests.episode_requests``: the histories rebuilt as
    the agent built them, old outputs elided, summaries refolded), each with its request body and the
    server's reported usage."""
    from loopcoder.agent.requests import episode_requests

    return [r for r in episode_requests(path).requests if r.answer is not None]


def episode_turns(path: str | Path, tokenizer, history: bool = False) -> list[Turn]:
    """Each answered model call of the trajectory at ``path``: its prompt's token ids (the server's
    ``render_chat``), the tokens it decoded and the prompt tokens the server reported."""
    from loopcoder.model_server.api.prompts import render_chat
    from loopcoder.model_server.api.protocol import ChatCompletionRequest

    turns = []
    for r in episode_bodies(path):
        prompt = render_chat(tokenizer, ChatCompletionRequest(**r.body), history=history)
        turns.append(Turn(prompt.token_ids, r.completion_tokens, r.prompt_tokens, prompt.history_tokens))
    return turns


# -- 2. what the server computes: its scheduler and caches, replayed -----------------------------------

@dataclass
class Work:
    """What the server computed for one request: prefill chunks (start, length) and decode contexts."""

    prompt_tokens: int
    cached_tokens: int  # prompt tokens not computed (as the server reports them)
    chunks: list[tuple[int, int]] = field(default_factory=list)
    decode_contexts: list[int] = field(default_factory=list)  # context length (keys) of each decode step

    def features(self) -> dict[str, float]:
        """The cost model's inputs (FEATURES)."""
        return {"requests": 1.0,
                "prefill_tokens": float(sum(n for _, n in self.chunks)),
                "prefill_pairs": float(sum(n * s + n * (n + 1) // 2 for s, n in self.chunks)),
                "decode_tokens": float(len(self.decode_contexts)),
                "decode_context": float(sum(self.decode_contexts))}


@dataclass
class EngineShape:
    """The settings of ``loopcoder serve`` that decide what is computed (nano_eval.py's command on CPU)."""

    loops: int
    num_layers: int = 30
    window: int = 65  # keys of the local branch, the current one included (LoopSpec: plt_window_size[0] + 1)
    block_size: int = 16
    max_num_seqs: int = 4
    max_model_len: int = 8192
    max_num_batched_tokens: int = 2048
    loop_state_snapshots: int = 32

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "EngineShape":
        """The shape of ``path`` (its loops, layers and window as the engine reads them) with the server's
        settings: ``configs/serve.yaml``'s engine section and nano_eval.py's flags."""
        from loopcoder.configs import load_config
        from loopcoder.model_server.plt.configuration import IQuestPLTCoderConfig, LoopSpec
        from loopcoder.scenarios.serve_cli import ServeConfig, engine_config

        config = IQuestPLTCoderConfig.from_pretrained(str(path))
        spec = LoopSpec.from_config(config, warn=False)
        settings = load_config(ServeConfig, None, [], default="serve").engine
        engine = engine_config({**settings, "model": str(path), "max_num_seqs": 4, "max_model_len": 8192})
        return cls(loops=spec.num_loops, num_layers=config.num_hidden_layers, window=spec.window,
                   block_size=engine.block_size, max_num_seqs=engine.max_num_seqs,
                   max_model_len=engine.max_model_len, max_num_batched_tokens=engine.max_num_batched_tokens,
                   loop_state_snapshots=engine.loop_state_snapshots)

    @property
    def num_blocks(self) -> int:  # the engine's CPU default: max_num_seqs full-length requests
        return self.max_num_seqs * -(-self.max_model_len // self.block_size)


class ServerReplay:
    """The engine's scheduler, block manager and loop-state store driven without a model (one request at a
    time, as one agent episode after another sends them); ``run`` returns what a request computes."""

    def __init__(self, shape: EngineShape):
        from loopcoder.model_server.engine.block_manager import BlockManager
        from loopcoder.model_server.engine.loop_state import LoopStateStore
        from loopcoder.model_server.engine.memory import recompute_tail
        from loopcoder.model_server.engine.scheduler import Scheduler

        self.shape = shape
        self.tail = recompute_tail(shape.loops, shape.num_layers, shape.window)
        self.blocks = BlockManager(shape.num_blocks, shape.block_size, shape.max_num_seqs, prefix_caching=True)
        keep = self.tail and shape.loop_state_snapshots  # the engine keeps loop state only for loops >= 2
        self.snapshots = LoopStateStore(shape.loop_state_snapshots) if keep else None
        self.scheduler = Scheduler(self.blocks, shape.max_num_seqs, shape.max_num_batched_tokens, self.tail,
                                   max_prefill_context=shape.max_model_len, snapshots=self.snapshots)
        self.count = 0

    def run(self, prompt_ids: list[int], completion_tokens: int, snapshot_at: int | None = None) -> Work:
        """Prefill ``prompt_ids`` as the engine schedules it, then ``completion_tokens - 1`` decode steps
        (the first token comes from the prefill), then finish; the caches keep what the engine keeps.
        ``snapshot_at``: the history's end, as the API server names it since the engine keeps a loop state
        there (None: as the engine ran before, snapshots at prompt ends only)."""
        from loopcoder.model_server.engine.sequence import Sequence, Status
        from loopcoder.model_server.engine.types import SamplingParams

        self.count += 1
        seq = Sequence(f"replay-{self.count}", list(prompt_ids),
                       SamplingParams(max_tokens=max(1, completion_tokens), snapshot_at=snapshot_at), frozenset(), 0.0)
        self.scheduler.add(seq)
        work = Work(len(prompt_ids), 0)
        while seq.status is Status.WAITING or seq.in_prefill:
            schedule = self.scheduler.schedule()
            if not schedule.prefill:
                raise RuntimeError("the replayed request was not admitted")
            for chunk in schedule.prefill:  # as LLMEngine.step does after the model ran
                work.chunks.append((chunk.start, chunk.length))
                seq.num_computed += chunk.length
                self.blocks.register(seq)
                if self.scheduler.snapshot_due(seq):
                    self.snapshots.keep(seq, lambda: None)  # the state itself is not needed here
        work.cached_tokens = seq.cached_tokens
        seq.output_ids.append(UNSEEN)
        while len(seq.output_ids) < completion_tokens:
            batch = self.scheduler.schedule().decode
            if batch != [seq]:
                raise RuntimeError("the replayed request was not decoded")
            work.decode_contexts.append(seq.num_tokens)  # keys of the step: positions 0 .. newest token
            seq.num_computed += 1
            self.blocks.register(seq)
            seq.output_ids.append(UNSEEN)
        self.scheduler.finish(seq, "length")
        return work


def replay_turns(turns: list[Turn], replay: ServerReplay, hints: bool = False) -> list[Work]:
    """Each turn's work, in order, on the replayed server (``hints``: with the history-end snapshots)."""
    return [replay.run(t.prompt_ids, t.completion_tokens, t.history_tokens or None if hints else None)
            for t in turns]


# -- 3. the cost model --------------------------------------------------------------------------------

def predict(features: dict[str, float], coef: dict[str, float]) -> float:
    """CPU seconds the model gives for one request's (or a sum of requests') features."""
    return sum(coef[name] * features.get(name, 0.0) for name in FEATURES)


def total_features(works: list[Work]) -> dict[str, float]:
    out = dict.fromkeys(FEATURES, 0.0)
    for w in works:
        for name, value in w.features().items():
            out[name] += value
    return out


def fit(rows: list[dict[str, float]], cpu: list[float]) -> dict[str, float]:
    """Non-negative least squares of ``cpu`` on the FEATURES of ``rows`` (an active set: a feature whose
    coefficient comes out negative is dropped, and the rest fitted again). Features are scaled to unit
    size first so that the solve is well conditioned."""
    import numpy as np

    x = np.array([[r[name] for name in FEATURES] for r in rows], dtype=float)
    y = np.array(cpu, dtype=float)
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    active = list(range(len(FEATURES)))
    while True:
        sol, *_ = np.linalg.lstsq(x[:, active] / scale[active], y, rcond=None)
        if (sol >= 0).all() or len(active) == 1:
            break
        active.pop(int(np.argmin(sol)))
    coef = dict.fromkeys(FEATURES, 0.0)
    for i, value in zip(active, sol):
        coef[FEATURES[i]] = max(0.0, float(value / scale[i]))
    return coef


def fit_report(rows: list[dict[str, float]], cpu: list[float], coef: dict[str, float]) -> dict[str, float]:
    """R^2, and the mean and largest relative error of the fit on its own points."""
    pred = [predict(r, coef) for r in rows]
    mean = sum(cpu) / len(cpu)
    ss_res = sum((p - y) ** 2 for p, y in zip(pred, cpu))
    ss_tot = sum((y - mean) ** 2 for y in cpu) or 1e-12
    rel = [abs(p - y) / y for p, y in zip(pred, cpu) if y > 0]
    return {"r2": round(1 - ss_res / ss_tot, 4), "mean_abs_rel_error": round(sum(rel) / len(rel), 3),
            "max_abs_rel_error": round(max(rel), 3), "sum_predicted_over_measured": round(sum(pred) / sum(cpu), 3)}


def readable(coef: dict[str, float]) -> dict[str, float]:
    """The coefficients in units a reader can picture."""
    return {"s_per_request": round(coef["requests"], 4),
            "ms_per_prefill_token": round(coef["prefill_tokens"] * 1e3, 4),
            "ms_per_million_prefill_pairs": round(coef["prefill_pairs"] * 1e9, 4),
            "ms_per_decoded_token": round(coef["decode_tokens"] * 1e3, 3),
            "ms_per_decoded_token_per_1k_context": round(coef["decode_context"] * 1e6, 4)}


# -- measure ------------------------------------------------------------------------------------------

def request_plan(a: list[int], b: list[int], lengths: list[int], new: int, decode: int) -> list[tuple[list[int], int]]:
    """(prompt ids, max_tokens) of the measured requests: a short cold prompt, once with decoding; then for
    each prefix length L: stream ``a`` extended to L (a prefill on top of the previous prefix), and an
    agent-like turn that leaves ``a`` 8 tokens before L and adds ``new`` tokens of ``b``, decoding ``decode``."""
    plan = [(a[:64], 1), (a[:64], 129)]
    for length in lengths:
        plan.append((a[:length], 1))
        plan.append((a[:length - 8] + b[:new], decode))
    return plan


def token_streams(tokenizer, need: int) -> tuple[list[int], list[int]]:
    """Two different token streams of real agent prompts (the held-out episodes), ``need`` ids each."""
    from loopcoder.model_server.api.prompts import render_chat
    from loopcoder.model_server.api.protocol import ChatCompletionRequest

    streams: list[list[int]] = [[], []]
    for i, path in enumerate(sorted(Path(HELD_OUT, "r2").glob("instances/*/trajectory.jsonl"))):
        if all(len(s) >= need for s in streams):
            break
        target = streams[i % 2]
        if len(target) < need:
            body = episode_bodies(path)[-1].body
            target.extend(render_chat(tokenizer, ChatCompletionRequest(**body)).token_ids)
    return streams[0][:need], streams[1][:need]


def work_from_usage(prompt_tokens: int, cached_tokens: int, completion_tokens: int, budget: int = 2048) -> Work:
    """What the server computed for a lone request, from its usage: the prompt from ``cached_tokens`` on in
    chunks of the prefill budget, then one decode step per generated token after the first."""
    work = Work(prompt_tokens, cached_tokens)
    start = cached_tokens
    while start < prompt_tokens:
        n = min(budget, prompt_tokens - start)
        work.chunks.append((start, n))
        start += n
    work.decode_contexts = [prompt_tokens + i for i in range(1, completion_tokens)]
    return work


def post(port: int, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=1800) as r:
        return json.loads(r.read())


def measure_loops(loops: int, plan: list[tuple[list[int], int]], log_dir: Path, idle_s: float) -> dict:
    """Serve ``CHECKPOINTS[loops]`` as nano_eval.py does and measure the server's CPU seconds per request."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from nano_eval import cpu_seconds, free_port, start_server, stop_server

    checkpoint = ROOT / CHECKPOINTS[loops]
    replay = ServerReplay(EngineShape.from_checkpoint(checkpoint))
    port = free_port()
    server = start_server(str(checkpoint), port, SimpleNamespace(max_batch=4, device="cpu"),
                          log_dir / f"r{loops}.server.log")
    rows = []
    try:
        time.sleep(2)
        c0, t0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(idle_s)
        idle = (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0)
        for prompt, max_tokens in plan:
            load = os.getloadavg()[0]
            c0, t0 = cpu_seconds(server.pid), time.monotonic()
            out = post(port, {"model": "nano", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                              "ignore_eos": True})
            cpu, wall = cpu_seconds(server.pid) - c0, time.monotonic() - t0
            usage = out["usage"]
            replayed = replay.run(prompt, usage["completion_tokens"])
            row = {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                   "cached_tokens": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0),
                   "replay_cached_tokens": replayed.cached_tokens, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                   "load_before": round(load, 2)}
            rows.append(row)
            print(f"R={loops} prompt {row['prompt_tokens']:>5} cached {row['cached_tokens']:>5} "
                  f"(replay {replayed.cached_tokens:>5}) out {row['completion_tokens']:>3}: "
                  f"{cpu:7.2f} CPU s, {wall:7.2f} s", flush=True)
    finally:
        stop_server(server)
    return {"checkpoint": CHECKPOINTS[loops], "idle_cpu_s_per_s": round(idle, 4), "requests": rows,
            "replay_cached_tokens_equal": all(r["cached_tokens"] == r["replay_cached_tokens"] for r in rows)}


def measured_rows(result: dict, budget: int) -> tuple[list[dict[str, float]], list[float]]:
    """(features, CPU seconds) of one pass's requests of one loop count (features from the server's usage)."""
    rows = [work_from_usage(r["prompt_tokens"], r["cached_tokens"], r["completion_tokens"], budget).features()
            for r in result["requests"]]
    return rows, [r["cpu_s"] for r in result["requests"]]


def fit_model(data: dict, budget: int) -> None:
    """Fit each pass on its own (the spread between passes) and, per loop count, all passes' requests
    together: ``data["model"]``, the cost model the estimates use."""
    pooled: dict[str, tuple[list, list]] = {}
    for measured in data["measures"]:
        for key, result in measured["per_loops"].items():
            rows, cpu = measured_rows(result, budget)
            coef = fit(rows, cpu)
            for r, feats in zip(result["requests"], rows):
                r["predicted_cpu_s"] = round(predict(feats, coef), 3)
            result.update(coefficients=coef, coefficients_readable=readable(coef), fit=fit_report(rows, cpu, coef))
            pooled.setdefault(key, ([], []))
            pooled[key][0].extend(rows)
            pooled[key][1].extend(cpu)
    model = {}
    for key, (rows, cpu) in pooled.items():
        coef = fit(rows, cpu)
        model[key] = {"requests": len(rows), "coefficients": coef, "coefficients_readable": readable(coef),
                      "fit": fit_report(rows, cpu, coef)}
    data["model"] = {"what": f"least squares over the requests of all {len(data['measures'])} measured passes",
                     "per_loops": model}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__, torch.get_num_threads())"],
                           capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    version, threads = (probe.stdout.split() + ["?", "?"])[:2]
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "torch": version, "torch_threads": threads,
            "threads_note": "loopcoder serve sets no thread count: torch's default on this machine, with the "
                            "CLI's OMP_WAIT_POLICY=PASSIVE"}


def cmd_measure(args) -> None:
    from loopcoder.model_server.plt.tokenizer import load_tokenizer

    lengths = [int(x) for x in args.lengths.split(",")]
    tokenizer = load_tokenizer(ROOT / CHECKPOINTS[1])
    a, b = token_streams(tokenizer, max(lengths) + args.new)
    plan = request_plan(a, b, lengths, args.new, args.decode)
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    measured = {"date": today(), "command": command_line(), "lengths": lengths, "new_tokens": args.new,
                "decode_tokens": args.decode, "per_loops": {}}
    for loops in (int(x) for x in args.loops.split(",")):
        measured["per_loops"][f"R{loops}"] = measure_loops(loops, plan, log_dir, args.idle)
    data = load_results(args.results)
    data["machine"] = machine()
    data.setdefault("measures", []).append(measured)  # earlier passes stay: the model pools them
    fit_model(data, EngineShape.from_checkpoint(ROOT / CHECKPOINTS[1]).max_num_batched_tokens)
    save_results(args.results, data, "measure")
    for key, m in measured["per_loops"].items():
        print(key, "this pass:", m["coefficients_readable"], m["fit"], "replay cached == server:",
              m["replay_cached_tokens_equal"])
    for key, m in data["model"]["per_loops"].items():
        print(key, "all passes:", m["coefficients_readable"], m["fit"])


def cmd_fit(args) -> None:
    """Fit the stored passes again (no measuring)."""
    data = load_results(args.results)
    fit_model(data, EngineShape.from_checkpoint(ROOT / CHECKPOINTS[1]).max_num_batched_tokens)
    save_results(args.results, data, "fit")
    for key, m in data["model"]["per_loops"].items():
        print(key, "all passes:", m["coefficients_readable"], m["fit"])


# -- estimate and validate ----------------------------------------------------------------------------

def coefficient_sets(data: dict) -> tuple[dict[int, dict], list[dict[int, dict]]]:
    """(the model's coefficients by loop count, each measured pass's in the order they were measured)."""
    if "model" not in data:
        raise SystemExit("error: the results have no measured cost model: run `measure` first")
    model = {int(key[1:]): m["coefficients"] for key, m in data["model"]["per_loops"].items()}
    return model, [{int(key[1:]): m["coefficients"] for key, m in p["per_loops"].items()} for p in data["measures"]]


def run_order(run: Path) -> list[Path]:
    """The run's trajectories in the order the episodes started."""
    def started(path: Path) -> str:
        status = path.parent / "status.json"
        return json.loads(status.read_text()).get("started_at", "") if status.exists() else ""
    return sorted(run.glob("instances/*/trajectory.jsonl"), key=lambda p: (started(p), p.parent.name))


def walk_run(run: Path, checkpoint: str, tokenizer, hints: bool = False) -> tuple[int, list[dict]]:
    """(loops, per episode of ``run``: requests, tokens and the replayed work's features), the episodes in
    run order through one replayed server, as ``--workers 1`` sends them; ``hints``: the engine as it is
    now, with a loop state kept at each chat history's end (without: as the measured runs ran)."""
    shape = EngineShape.from_checkpoint(ROOT / checkpoint)
    replay = ServerReplay(shape)
    out = []
    for path in run_order(run):
        turns = episode_turns(path, tokenizer, history=hints)
        works = replay_turns(turns, replay, hints)
        feats = total_features(works)
        out.append({"instance": path.parent.name, "requests": len(turns),
                    "prompts_rebuilt_exactly": sum(t.matches for t in turns),
                    "prompt_tokens": sum(w.prompt_tokens for w in works),
                    "computed_prompt_tokens": int(feats["prefill_tokens"]),
                    "cached_tokens": sum(w.cached_tokens for w in works),
                    "decoded_tokens": sum(t.completion_tokens for t in turns),
                    "features": feats})
    return shape.loops, out


def cost_episodes(episodes: list[dict], coef: dict[str, float]) -> list[float]:
    return [round(predict(e["features"], coef), 1) for e in episodes]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"mean": round(statistics.fmean(values), 1), "median": round(statistics.median(values), 1),
            "p90": round(p90, 1), "total": round(sum(values), 1)}


def measured_cpu(run: Path) -> Optional[dict]:
    """Server CPU and wall seconds nano_eval.py measured for the run (summed over its segments), or None."""
    seg = run / "segments.jsonl"
    if not seg.exists():
        return None
    rows = [json.loads(line) for line in seg.read_text().splitlines() if line.strip()]
    return {"server_cpu_s": sum(r["server_cpu_s"] for r in rows), "wall_s": sum(r["wall_s"] for r in rows),
            "device": rows[0].get("server_device") or "cpu"}


def cmd_estimate(args) -> None:
    from loopcoder.model_server.plt.tokenizer import load_tokenizer

    data = load_results(args.results)
    model, passes = coefficient_sets(data)
    tokenizer = load_tokenizer(ROOT / CHECKPOINTS[1])
    table = {}
    for name, checkpoint in CONFIGS.items():
        loops, episodes = walk_run(Path(args.held_out) / name, checkpoint, tokenizer)
        cpu = cost_episodes(episodes, model[loops])
        for e, value in zip(episodes, cpu):
            e["estimated_cpu_s"] = value
        table[name] = {"checkpoint": checkpoint, "loops": loops, "episodes": len(episodes),
                       "estimated_cpu_s_per_episode": summary(cpu),
                       "mean_by_pass": [summary(cost_episodes(episodes, p[loops]))["mean"] for p in passes],
                       "requests": sum(e["requests"] for e in episodes),
                       "prompts_rebuilt_exactly": sum(e["prompts_rebuilt_exactly"] for e in episodes),
                       "computed_share_of_prompt_tokens": round(
                           sum(e["computed_prompt_tokens"] for e in episodes)
                           / max(1, sum(e["prompt_tokens"] for e in episodes)), 3),
                       # the agent's wall-time budget (1,200 s) would stop such episodes on this CPU; the
                       # capped mean is a rough bound of that (server CPU s roughly tracks wall s here)
                       "episodes_over_1200_s": sum(v > 1200 for v in cpu),
                       "mean_if_capped_at_1200_s": round(statistics.fmean(min(v, 1200.0) for v in cpu), 1),
                       "per_episode": episodes}
        # the same episodes on the engine as it is now: a loop state kept at each chat history's end
        _, hinted = walk_run(Path(args.held_out) / name, checkpoint, tokenizer, hints=True)
        table[name]["with_history_snapshots"] = {
            "estimated_cpu_s_per_episode": summary(cost_episodes(hinted, model[loops])),
            "computed_share_of_prompt_tokens": round(sum(e["computed_prompt_tokens"] for e in hinted)
                                                     / max(1, sum(e["prompt_tokens"] for e in hinted)), 3)}
        print(f"{name:9} {len(episodes)} episodes: estimated CPU s/episode {table[name]['estimated_cpu_s_per_episode']}"
              f" (by pass: {table[name]['mean_by_pass']}); with history snapshots "
              f"{table[name]['with_history_snapshots']['estimated_cpu_s_per_episode']}")
    data["estimate"] = {"date": today(), "command": command_line(), "held_out": args.held_out, "per_config": table}
    save_results(args.results, data, "estimate")


def same_instances(episodes: list[dict], config: Optional[dict], measured: dict) -> Optional[dict]:
    """The estimate of the held-out table's own episodes (the GPU host's trajectories) of the instances this
    run also ran, against the CPU seconds measured here: how far the GPU trajectories are from the CPU ones.
    Only where the run's instances are all among the table's."""
    if not config:
        return None
    gpu = {e["instance"]: e for e in config["per_episode"]}
    if not all(e["instance"] in gpu for e in episodes):
        return None
    est = sum(gpu[e["instance"]]["estimated_cpu_s"] for e in episodes)
    return {"table_config": config.get("checkpoint"), "estimated_cpu_s": round(est, 1),
            "ratio_estimate_over_measured": round(est / measured["server_cpu_s"], 3),
            "decoded_tokens_gpu": sum(gpu[e["instance"]]["decoded_tokens"] for e in episodes),
            "decoded_tokens_cpu": sum(e["decoded_tokens"] for e in episodes),
            "requests_gpu": sum(gpu[e["instance"]]["requests"] for e in episodes),
            "requests_cpu": sum(e["requests"] for e in episodes)}


def cmd_validate(args) -> None:
    from loopcoder.model_server.plt.tokenizer import load_tokenizer

    data = load_results(args.results)
    model, passes = coefficient_sets(data)
    tokenizer = load_tokenizer(ROOT / CHECKPOINTS[1])
    held_out = data.get("estimate", {}).get("per_config", {})
    rows = []
    for name, folder, checkpoint, beside, config, *engine in VALIDATION:
        hints = bool(engine and engine[0])
        run = Path(folder)
        measured = measured_cpu(run) if run.exists() else None
        if measured is None or measured["device"] != "cpu":
            print(f"{name}: no server CPU measured on this CPU at {folder}, skipped")
            continue
        loops, episodes = walk_run(run, checkpoint, tokenizer, hints=hints)
        cpu = cost_episodes(episodes, model[loops])
        for e, value in zip(episodes, cpu):
            e["estimated_cpu_s"] = value
        est = sum(cpu)
        rows.append({"run": name, "folder": folder, "checkpoint": checkpoint, "loops": loops,
                     "engine": "history-end snapshots" if hints else "snapshots at prompt ends only",
                     "episodes": len(episodes), "ran_beside": beside,
                     "measured_server_cpu_s": round(measured["server_cpu_s"], 1),
                     "wall_s": round(measured["wall_s"], 1),
                     "estimated_cpu_s": round(est, 1),
                     "ratio_estimate_over_measured": round(est / measured["server_cpu_s"], 3),
                     "ratio_by_pass": [round(sum(cost_episodes(episodes, p[loops])) / measured["server_cpu_s"], 3)
                                       for p in passes],
                     "requests": sum(e["requests"] for e in episodes),
                     "prompts_rebuilt_exactly": sum(e["prompts_rebuilt_exactly"] for e in episodes),
                     # the table's GPU episodes were estimated on the engine before (without hints)
                     "same_instances_gpu_trajectories": None if hints else
                     same_instances(episodes, held_out.get(config), measured),
                     "per_episode": episodes})
        print(f"{name:20} {len(episodes)} episodes: measured {measured['server_cpu_s']:7.1f} s, "
              f"estimated {est:7.1f} s, "
              f"ratio {est / measured['server_cpu_s']:.2f}")
    data["validation"] = {"date": today(), "command": command_line(), "runs": rows}
    save_results(args.results, data, "validate")


# -- results file -------------------------------------------------------------------------------------

def today() -> str:
    return datetime.date.today().isoformat()


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def load_results(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def save_results(path: Path, data: dict, step: str) -> None:
    data.setdefault("what", "Estimated CPU seconds per episode of LoopCoder-Nano's model server on this CPU "
                            "(no GPU), from each episode's recorded requests and a cost model measured here "
                            "(benchmarks/nano_cpu_estimate.py, docs in its docstring)")
    data["date"] = today()
    commands = data.setdefault("commands", {})
    commands[step] = command_line()
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="the JSON every step updates")
    sub = ap.add_subparsers(dest="step", required=True)
    m = sub.add_parser("measure", help="measure the server's CPU seconds per request and fit the cost model")
    m.add_argument("--loops", default="1,2", help="loop counts to measure (1: .cache/d4-r1, 2: .cache/nano)")
    m.add_argument("--lengths", default="1024,2048,3072,4096,6144", help="prefix lengths of the requests")
    m.add_argument("--new", type=int, default=384, help="new tokens of each agent-like turn")
    m.add_argument("--decode", type=int, default=96, help="tokens each agent-like turn decodes")
    m.add_argument("--idle", type=float, default=5.0, help="seconds of idle server CPU measured first")
    m.add_argument("--log-dir", default="/tmp/nano-cpu-estimate", help="where the server logs go")
    e = sub.add_parser("estimate", help="estimate the held-out table's episodes")
    e.add_argument("--held-out", default=HELD_OUT, help="the table's run folder (one folder per configuration)")
    sub.add_parser("validate", help="the estimate against the server CPU measured on this CPU")
    sub.add_parser("fit", help="fit the stored measurements again (no measuring)")
    args = ap.parse_args()
    {"measure": cmd_measure, "fit": cmd_fit, "estimate": cmd_estimate, "validate": cmd_validate}[args.step](args)


if __name__ == "__main__":
    main()
