"""Loop-state snapshots at a chat history's end: the prompt CPU of recorded R=2 agent turns, before and after.

An agent's next chat request re-sends the history and appends the answer and the tool result, but not the
generation prompt the previous request ended with (``<|im_start|>assistant`` and an empty think block). The
previous prompt's loop-state snapshot (rings and carry, engine/loop_state.py) sits at its end, past the
point where the two prompts part, so at R=2 every turn ran all loops again over the last
``recompute_tail`` positions of its prefix-cache hit. Now the API server names the history's end
(``ChatPrompt.history_tokens`` -> ``SamplingParams.snapshot_at``) and the engine keeps a snapshot there.

This script replays the chat requests of recorded episodes (the histories rebuilt as the agent built them:
``agent.requests.episode_requests``) against two real ``loopcoder serve`` processes on loopback, one after
the other in one run: the code of ``--before`` (a git worktree) and this tree. Same checkpoint, same
requests; each asks for one token (``max_tokens`` 1), so the CPU measured is the prompt's, which is all the
change touches. Per request: the server process's CPU seconds (/proc, as nano_eval.py counts them), the
prompt tokens and the cached tokens it reported.

    python benchmarks/nano_snapshot_replay.py --before e36a7d9 --checkpoint .cache/nano \\
        -t /work/nanodata/eval5/eval/r2/instances/andialbrecht__sqlparse.synth-0039c39411/trajectory.jsonl \\
        --out benchmarks/results/nano-snapshot-replay.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from nano_cpu_estimate import episode_bodies  # noqa: E402
from nano_eval import cpu_seconds, free_port, start_server, stop_server  # noqa: E402

FOLDERS = ("agent", "tools", "runtime", "model_server", "scenarios", "configs")


def namespace_of(tree: Path, into: Path) -> Path:
    """A folder whose loopcoder/ maps the import namespace onto ``tree`` (as benchmarks/device_setup.sh):
    first on PYTHONPATH, it wins over the editable install of this checkout."""
    (into / "loopcoder").mkdir(parents=True, exist_ok=True)
    for name in FOLDERS:
        (into / "loopcoder" / name).symlink_to(tree / name)
    return into


def serve(checkpoint: str, port: int, log: Path, pythonpath: str | None) -> subprocess.Popen:
    """``loopcoder serve`` as nano_eval.py starts it on CPU; ``pythonpath`` first on the path (another tree)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return start_server(checkpoint, port, SimpleNamespace(max_batch=4, device="cpu"), log, env)


def chat(port: int, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=1800) as r:
        return json.loads(r.read())


def replay(label: str, episodes: dict[str, list[dict]], checkpoint: str, log: Path,
           pythonpath: str | None) -> dict:
    port = free_port()
    server = serve(checkpoint, port, log, pythonpath)
    rows = []
    try:
        for name, bodies in episodes.items():
            for turn, body in enumerate(bodies):
                c0, t0 = cpu_seconds(server.pid), time.monotonic()
                usage = chat(port, dict(body, model="nano", max_tokens=1, temperature=0.0))["usage"]
                cpu, wall = cpu_seconds(server.pid) - c0, time.monotonic() - t0
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                rows.append({"episode": name, "turn": turn, "prompt_tokens": usage["prompt_tokens"],
                             "cached_tokens": cached, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3)})
                print(f"{label:6} {name[:40]:40} turn {turn:2}: prompt {usage['prompt_tokens']:5} cached "
                      f"{cached:5}  {cpu:7.2f} CPU s", flush=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            metrics = {line.split()[0]: float(line.split()[1]) for line in r.read().decode().splitlines()
                       if line.startswith("loopcoder_prefix_cache") or line.startswith("loopcoder_prompt_tokens")}
    finally:
        stop_server(server)
    prompt = sum(r["prompt_tokens"] for r in rows)
    cached = sum(r["cached_tokens"] for r in rows)
    return {"requests": rows, "metrics": metrics, "prompt_tokens": prompt, "cached_tokens": cached,
            "computed_share": round(1 - cached / prompt, 4), "cpu_s": round(sum(r["cpu_s"] for r in rows), 2),
            "wall_s": round(sum(r["wall_s"] for r in rows), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--trajectory", action="append", required=True, help="a recorded episode (repeatable)")
    ap.add_argument("--checkpoint", default=".cache/nano", help="an R=2 checkpoint (the default: Nano's)")
    ap.add_argument("--before", required=True, help="the commit to compare with (a git worktree of it is made)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    episodes = {Path(t).parent.name: [r.body for r in episode_bodies(t)] for t in args.trajectory}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before], check=True,
                       capture_output=True)
        try:
            before_ns = namespace_of(tree, Path(tmp) / "ns")
            runs = {"before": replay("before", episodes, args.checkpoint, Path(tmp) / "before.log", str(before_ns)),
                    "after": replay("after", episodes, args.checkpoint, Path(tmp) / "after.log", None)}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    b, a = runs["before"], runs["after"]
    result = {
        "what": __doc__.split("\n\n")[0],
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["python", "benchmarks/nano_snapshot_replay.py"] + sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "before_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.before], capture_output=True,
                                        text=True).stdout.strip(),
        "after_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                       text=True).stdout.strip() + " (and the working tree)",
        "checkpoint": args.checkpoint, "episodes": {k: len(v) for k, v in episodes.items()},
        "summary": {"cpu_s_before": b["cpu_s"], "cpu_s_after": a["cpu_s"],
                    "cpu_ratio_after_over_before": round(a["cpu_s"] / b["cpu_s"], 3),
                    "computed_share_before": b["computed_share"], "computed_share_after": a["computed_share"]},
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
