"""LoopCoder-Nano on held-out synthesized instances: the comparison table of issue 17 (docs/nano.md).

Each configuration is a checkpoint (its own loop count) with thinking off or on. For each one the script
serves the checkpoint with ``loopcoder serve`` on loopback, runs the real SWE-bench runner on the chosen
held-out instances (``loopcoder swebench run``: isolated checkout, environment image, Docker sandbox, the
Nano agent config, then the real evaluation) and reads back from the run folder:

- resolved: the evaluation report's verdicts (``loopcoder.<run>.json``);
- well-formed answers: model answers holding at least one usable tool call / model answers (from each
  trajectory: ``model_response`` events minus ``format_error`` events), and the agent's own
  ``well_formed_share`` (tool calls that parsed and matched a tool's schema / tool calls);
- steps per episode (the stop event's step) and why episodes stopped;
- the edits (``edits``): every ``str_replace`` result, applied or refused and why (``edit_outcome``), and how
  many final patches change a line the gold patch changes (``patch_at_gold_lines``: the edit found the bug's
  place, right or wrong);
- CPU seconds per episode of the model server (utime + stime of the ``loopcoder serve`` process over the
  run, from /proc; sandboxes and the runner not included) and wall seconds per episode.

Everything resumes: a configuration whose run folder exists is continued with the runner's ``--resume``
(its CPU and wall seconds are summed over the invocations, ``segments.jsonl``); ``--only`` picks
configurations. Instances: ``--limit N`` taken round-robin over the dataset's repositories (each
package equally), in dataset order within a package.

On a host without Docker (the GPU device: ``benchmarks/nano_device_eval.sh``): ``--device cuda`` serves on the
GPU (each server with a KV pool of its own size, so several fit), ``--parallel`` runs the configurations at
once, ``--runtime-set sandbox.backend=local --runtime-set local.allow=true`` runs the episodes without
sandbox images and ``--no-eval`` leaves the grading out; back on a machine with Docker, ``--grade-only``
grades every configuration's predictions (``loopcoder swebench eval``) and writes the table.

    python benchmarks/nano_eval.py -d /work/nanodata/heldout.jsonl --repos-dir /work/nanodata/repos \\
        --config base=.cache/nano-base --config r1=.cache/nano-r1 --config r2=.cache/nano-r2 \\
        --config r2-think=.cache/nano-r2:think --limit 50 --workers 3 --out benchmarks/results/nano-eval
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the CLI of the interpreter running this script (as a module: also where the package is not pip-installed)
LOOPCODER = [sys.executable, "-m", "loopcoder.scenarios.cli"]


def select(dataset: Path, limit: int | None) -> list[str]:
    """Instance ids, round-robin over repositories in dataset order."""
    by_repo: dict[str, list[str]] = collections.OrderedDict()
    for line in dataset.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_repo.setdefault(row["repo"], []).append(row["instance_id"])
    picked: list[str] = []
    queues = [collections.deque(ids) for ids in by_repo.values()]
    while queues and (limit is None or len(picked) < limit):
        for q in list(queues):
            if limit is not None and len(picked) >= limit:
                break
            picked.append(q.popleft())
            if not q:
                queues.remove(q)
    return picked


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its waited-for children (/proc/<pid>/stat fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def start_server(checkpoint: str, port: int, args, log: Path, env: dict | None = None) -> subprocess.Popen:
    """``loopcoder serve`` of ``checkpoint`` on loopback, once its /health says ok (``env``: the process's
    environment, default this one's)."""
    cmd = LOOPCODER + ["serve", "--model", checkpoint, "--host", "127.0.0.1", "--port", str(port),
                       "--max-model-len", "8192", "--max-batch", str(args.max_batch), "--served-model-name", "nano",
                       "--device", args.device]
    if args.device == "cuda":  # servers share the GPU (--parallel): a KV pool of what they need, not 90% of it
        cmd += ["--kv-cache-blocks", str(args.max_batch * 8192 // 16)]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server for {checkpoint} exited with code {proc.returncode} (see {log})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if json.loads(r.read()).get("status") == "ok":
                    return proc
        except OSError:
            pass
        time.sleep(2)
    proc.kill()
    raise SystemExit(f"error: the server for {checkpoint} was not ready after 600 s (see {log})")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_config(name: str, checkpoint: str, thinking: bool, ids: list[str], args) -> None:
    out = Path(args.out) / name
    resume = (out / "run.json").exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_server(checkpoint, port, args, Path(args.out) / f"{name}.server.log")
    cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
    done_before = count_preds(out)
    cmd = LOOPCODER + ["swebench", "run", "-d", args.dataset, "--repos-dir", args.repos_dir, "--config",
                       str(ROOT / "configs/nano_agent.yaml"), "--model-url", f"http://127.0.0.1:{port}/v1",
                       "--model", "nano", "--workers", str(args.workers), "-o", str(out),
                       "--thinking" if thinking else "--no-thinking"] + ([] if args.no_eval else ["--eval"])
    cmd += ["--resume"] if resume else ["-i", ",".join(ids), "--run-id", f"nano-eval-{name}"]
    for item in args.set or []:
        cmd += ["--set", item]
    for item in args.runtime_set or []:
        cmd += ["--runtime-set", item]
    print("$", shlex.join(cmd), flush=True)
    try:
        runner = subprocess.Popen(cmd)
        RUNNERS.append(runner)
        if STOP.is_set():  # a stop that came while this one was starting
            runner.send_signal(signal.SIGINT)
        code = runner.wait()
    finally:
        cpu = cpu_seconds(server.pid) - cpu0
        wall = time.monotonic() - t0
        stop_server(server)
    with (out / "segments.jsonl").open("a") as f:
        f.write(json.dumps({"server_cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "runner_exit": code,
                            "server_device": args.device, "parallel": bool(args.parallel),
                            "host_cpus": os.cpu_count(), "runtime_set": args.runtime_set or [],
                            "predictions_before": done_before, "predictions_after": count_preds(out),
                            "command": shlex.join(cmd)}) + "\n")


def grade(name: str, args) -> None:
    """Grade a configuration's predictions here, in Docker (runs made with --no-eval, e.g. on a host without it)."""
    out = Path(args.out) / name
    if not (out / "preds.jsonl").exists():
        raise SystemExit(f"error: {out / 'preds.jsonl'} does not exist: nothing to grade for {name}")
    cmd = LOOPCODER + ["swebench", "eval", "-p", str(out / "preds.jsonl"), "-d", args.dataset, "--repos-dir",
                       args.repos_dir, "-o", str(out), "--run-id", f"nano-eval-{name}"]
    print("$", shlex.join(cmd), flush=True)
    if subprocess.call(cmd):
        raise SystemExit(f"error: grading {name} failed")


RUNNERS: list[subprocess.Popen] = []
STOP = threading.Event()


def stop_runs(signum, frame) -> None:
    """SIGTERM/SIGINT: each running `swebench run` gets Ctrl-C (it stops its episodes and keeps what finished),
    then its configuration records its segment and stops its server; no further configuration starts."""
    STOP.set()
    for runner in RUNNERS:
        if runner.poll() is None:
            runner.send_signal(signal.SIGINT)


def count_preds(out: Path) -> int:
    p = out / "preds.jsonl"
    return sum(1 for line in p.read_text().splitlines() if line.strip()) if p.exists() else 0


# str_replace results by their tool's refusal text (tools/edit); the first that matches names the outcome
EDIT_REFUSALS = (("old_str and new_str are the same", "identical"), ("bad arguments", "bad_arguments"),
                 ("already ran", "repeated_call"), ("no such file", "no_such_file"),
                 ("old_str not found", "old_str_not_found"))


def edit_outcome(result: dict) -> str:
    """``applied`` for a str_replace that changed the file, else why the tool refused it."""
    if result.get("ok"):
        return "applied"
    return next((name for text, name in EDIT_REFUSALS if text in result.get("output", "")), "other_error")


def changed_lines(patch: str) -> set[tuple[str, int]]:
    """(file, line) of the original lines a unified diff removes or replaces; a pure insertion counts the
    line it follows. A patch unidiff cannot read (the model's workspace can hold anything) changes none."""
    from unidiff import PatchSet
    from unidiff.errors import UnidiffParseError

    lines = set()
    try:
        files = PatchSet(patch)
    except UnidiffParseError:
        return lines
    for f in files:
        path = f.source_file[2:] if f.source_file.startswith("a/") else f.source_file
        for hunk in f:
            previous = hunk.source_start - 1
            for line in hunk:
                if line.is_removed:
                    lines.add((path, line.source_line_no))
                elif line.is_added:
                    lines.add((path, previous))
                if line.source_line_no is not None:
                    previous = line.source_line_no
    return lines


def gold_patches(dataset: Path) -> dict[str, str]:
    """instance_id -> the gold patch, from the dataset's JSONL."""
    rows = [json.loads(line) for line in dataset.read_text().splitlines() if line.strip()]
    return {r["instance_id"]: r["patch"] for r in rows}


def summarize(name: str, checkpoint: str, thinking: bool, out: Path, gold: dict[str, str] | None = None) -> dict:
    from loopcoder.model_server.plt.configuration import IQuestPLTCoderConfig, LoopSpec
    from loopcoder.scenarios.swebench.report import latest_eval

    evaluation = latest_eval(out) or {}
    verdicts = {r["instance_id"]: r["status"] for r in evaluation.get("instances", [])}
    answers = usable = calls = well = 0
    steps, stops, edits = [], collections.Counter(), collections.Counter()
    for traj in sorted(out.glob("instances/*/trajectory.jsonl")):
        events = [json.loads(line) for line in traj.read_text().splitlines() if line.strip()]
        edits.update(edit_outcome(e) for e in events if e["type"] == "tool_result" and e["name"] == "str_replace")
        n_ans = sum(e["type"] == "model_response" for e in events)
        n_err = sum(e["type"] == "format_error" for e in events)
        answers += n_ans
        usable += n_ans - n_err
        stop = next((e for e in reversed(events) if e["type"] == "stop"), None)
        if stop:
            steps.append(stop["step"])
            stops[stop["reason"]] += 1
            calls += stop["stats"].get("tool_calls", 0)
            well += stop["stats"].get("well_formed", 0)
    statuses = [json.loads(p.read_text()) for p in sorted(out.glob("instances/*/status.json"))]
    statuses = [st for st in statuses if st.get("prediction")]
    segments = [json.loads(line) for line in (out / "segments.jsonl").read_text().splitlines()] \
        if (out / "segments.jsonl").exists() else []
    episodes = len(steps)
    # the loops the server runs: the checkpoint's num_loops override, else its trained count
    loops = LoopSpec.from_config(IQuestPLTCoderConfig.from_pretrained(checkpoint), warn=False).num_loops
    resolved = sum(v == "resolved" for v in verdicts.values())
    preds = [json.loads(line) for line in (out / "preds.jsonl").read_text().splitlines() if line.strip()] \
        if (out / "preds.jsonl").exists() else []
    patches = {p["instance_id"]: p["model_patch"] for p in preds if p.get("model_patch")}
    at_gold = sum(bool(changed_lines(p) & changed_lines(gold[i])) for i, p in patches.items() if gold and i in gold)
    return {
        "config": name, "checkpoint": checkpoint, "loops": loops, "thinking": thinking,
        "instances": len(verdicts), "episodes": episodes, "resolved": resolved,
        "resolve_rate": round(resolved / len(verdicts), 4) if verdicts else None,
        "eval_status": dict(collections.Counter(verdicts.values())),
        "well_formed_answer_share": round(usable / answers, 4) if answers else None,
        "well_formed_tool_call_share": round(well / calls, 4) if calls else None,
        "model_answers": answers, "tool_calls": calls,
        "steps_mean": round(sum(steps) / episodes, 2) if episodes else None,
        "stop_reasons": dict(stops),
        "edits": {"str_replace_calls": sum(edits.values()), **dict(edits.most_common())},
        "non_empty_patches": len(patches), "patch_at_gold_lines": at_gold if gold else None,
        # one episode from start to end (its own clock; the runner's workers run several at once)
        "episode_s_mean": round(sum(st["seconds"] for st in statuses) / len(statuses), 1) if statuses else None,
        "output_tokens_mean": round(sum(st["tokens_out"] for st in statuses) / len(statuses)) if statuses else None,
        # the server's CPU and the run's wall seconds over the episodes (with --workers N, wall is N episodes
        # at once); None, not 0, when no segment was recorded (a run stopped before its server's CPU time was read)
        "server_cpu_s_per_episode": round(sum(s["server_cpu_s"] for s in segments) / episodes, 1)
        if episodes and segments else None,
        "wall_s_per_episode": round(sum(s["wall_s"] for s in segments) / episodes, 1) if episodes and segments else None,
        # where the episodes ran (the segments' record): the server's device, the host's CPUs, the sandbox
        "ran_on": sorted({f"server {s.get('server_device', 'cpu')}, {s.get('host_cpus', '?')} CPUs"
                          + (f", {' '.join(s['runtime_set'])}" if s.get("runtime_set") else "")
                          + (", configurations in parallel" if s.get("parallel") else "") for s in segments}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-d", "--dataset", required=True)
    ap.add_argument("--repos-dir", required=True)
    ap.add_argument("--config", action="append", required=True, metavar="NAME=CHECKPOINT[:think]")
    ap.add_argument("--only", action="append", help="run only these configuration names (the table has all)")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--set", action="append", help="agent setting override passed to swebench run")
    ap.add_argument("--runtime-set", action="append", help="runtime config override passed to swebench run, e.g. "
                    "sandbox.backend=local (hosts without Docker; grade later with --grade-only)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model servers run")
    ap.add_argument("--parallel", action="store_true", help="run the configurations at once, one server each")
    ap.add_argument("--no-eval", action="store_true", help="episodes only; grade afterwards with --grade-only")
    ap.add_argument("--grade-only", action="store_true", help="grade the runs' predictions here (Docker)")
    ap.add_argument("--summarize-only", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/nano-eval")
    args = ap.parse_args()
    # SIGTERM (a timeout, a kill) and Ctrl-C stop the runs cleanly: their servers are stopped, finished
    # episodes and the segments (CPU and wall seconds) are kept, and a later call resumes
    signal.signal(signal.SIGTERM, stop_runs)
    signal.signal(signal.SIGINT, stop_runs)
    configs = []
    for spec in args.config:
        name, _, rest = spec.partition("=")
        checkpoint, _, flag = rest.partition(":")
        if not name or not checkpoint or flag not in ("", "think"):
            raise SystemExit(f"error: --config {spec!r}: expected NAME=CHECKPOINT or NAME=CHECKPOINT:think")
        if not (Path(checkpoint) / "config.json").exists():
            raise SystemExit(f"error: --config {spec!r}: {checkpoint} holds no checkpoint (config.json)")
        configs.append((name, checkpoint, flag == "think"))
    ids = select(Path(args.dataset), args.limit)
    chosen = [c for c in configs if not args.only or c[0] in args.only]
    if args.grade_only:
        for name, _, _ in chosen:
            grade(name, args)
    elif not args.summarize_only and args.parallel:
        with concurrent.futures.ThreadPoolExecutor(len(chosen)) as pool:
            for f in [pool.submit(run_config, name, checkpoint, thinking, ids, args)
                      for name, checkpoint, thinking in chosen]:
                f.result()
    elif not args.summarize_only:
        for name, checkpoint, thinking in chosen:
            if not STOP.is_set():
                run_config(name, checkpoint, thinking, ids, args)
    if STOP.is_set():
        raise SystemExit("stopped: the runs resume where they were with the same command")
    gold = gold_patches(Path(args.dataset))
    rows = [summarize(name, checkpoint, thinking, Path(args.out) / name, gold) for name, checkpoint, thinking in configs]
    result = {"command": shlex.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "dataset": args.dataset,
              "instances": ids, "workers": args.workers, "summarized_on": f"{os.cpu_count()} CPU cores",
              "rows": rows}
    Path(args.out, "table.json").write_text(json.dumps(result, indent=2) + "\n")
    cols = ["config", "loops", "thinking", "instances", "resolved", "resolve_rate", "well_formed_answer_share",
            "well_formed_tool_call_share", "steps_mean", "non_empty_patches", "patch_at_gold_lines",
            "output_tokens_mean", "episode_s_mean",
            "server_cpu_s_per_episode", "wall_s_per_episode"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    Path(args.out, "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
