"""Sandbox speed of two code versions, sample by sample in turn, so both see the same machine load.

    .venv/bin/python benchmarks/sandbox_ab.py --b-pythonpath /tmp/ns-session [--starts 20] [--execs 300]
        [--batch 20] [--out PATH]

On a shared machine the load swings within a minute (load average 10-35 while issue 9's figures were
taken), so two runs of ``benchmarks/sandbox.py`` one after the other compare the load as much as the
code. Here two worker processes, A (this checkout) and B (``loopcoder`` imported from
``--b-pythonpath``, e.g. the shim that ``benchmarks/issue9_regressions.sh`` makes for a scratch worktree
of older code), each import their own version once; the driver asks them in turn for one sandbox start
(``DockerSandbox(...)`` + ``exec("true")``, timed as in ``sandbox.py``), then for batches of
``exec("true")`` and ``exec("echo hi")`` on one warm sandbox each, alternating which goes first. Summaries
as in ``sandbox.py`` (p50/p90/p99 in ms) per version. Only the Unix socket of the Docker engine is used.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def worker() -> None:
    """Answers one JSON line per request line: start | open | exec N CMD | where | quit."""
    import warnings

    import loopcoder.runtime
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.docker_sandbox import DockerSandbox
    from loopcoder.runtime.engine import connect_docker
    from sandbox import time_one_start  # benchmarks/sandbox.py, on whichever loopcoder PYTHONPATH names

    warnings.simplefilter("ignore")
    cfg = load_runtime_config()
    client = connect_docker()
    image = cfg.images.base_image
    ws = tempfile.mkdtemp(prefix="loopcoder-bench-ab-")
    warm = None
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the answer channel
    for line in sys.stdin:
        op, *rest = line.rstrip("\n").split(" ", 2)
        if op == "where":
            ans = {"runtime": os.path.realpath(loopcoder.runtime.__file__)}
        elif op == "start":
            start, close = time_one_start(client, cfg, image, ws)
            ans = {"start": start, "close": close}
        elif op == "open":
            warm = DockerSandbox(ws, config=cfg.sandbox, image=image, client=client,
                                 labels={"loopcoder.purpose": "benchmark"})
            for command in ("true", "echo hi"):
                for _ in range(10):  # warm-up, as in sandbox.py
                    warm.exec(command)
            ans = {}
        elif op == "exec":
            n, command = int(rest[0]), rest[1]
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                warm.exec(command)
                times.append(time.perf_counter() - t0)
            ans = {"times": times}
        elif op == "quit":
            if warm is not None:
                warm.close()
            break
        else:
            raise SystemExit(f"unknown request {op!r}")
        out.write(json.dumps(ans) + "\n")
        out.flush()


class Worker:
    def __init__(self, pythonpath: str | None):
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def ask(self, request: str) -> dict:
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"error: worker ended on {request!r} (exit {self.proc.wait()})")
        return json.loads(line)

    def quit(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def main() -> None:
    if "--worker" in sys.argv:
        return worker()
    from sandbox import summary_ms  # same percentiles as benchmarks/sandbox.py

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--b-pythonpath", required=True, help="PYTHONPATH that makes loopcoder the B version")
    ap.add_argument("--b-label", default="B")
    ap.add_argument("--a-label", default="A (this checkout)")
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--execs", type=int, default=300)
    ap.add_argument("--batch", type=int, default=20, help="execs per turn")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.execs % args.batch:
        ap.error("--execs must be a multiple of --batch")

    workers = {"A": Worker(None), "B": Worker(args.b_pythonpath)}
    where = {k: w.ask("where")["runtime"] for k, w in workers.items()}
    if where["A"] == where["B"]:
        raise SystemExit(f"error: both workers import the same code ({where['A']})")
    load_before = os.getloadavg()
    starts = {"A": [], "B": []}
    closes = {"A": [], "B": []}
    for i in range(args.starts):
        for k in ("AB" if i % 2 == 0 else "BA"):
            ans = workers[k].ask("start")
            starts[k].append(ans["start"])
            closes[k].append(ans["close"])
    for w in workers.values():
        w.ask("open")
    execs = {k: {"true": [], "echo hi": []} for k in workers}
    for command in ("true", "echo hi"):
        for i in range(args.execs // args.batch):
            for k in ("AB" if i % 2 == 0 else "BA"):
                execs[k][command] += workers[k].ask(f"exec {args.batch} {command}")["times"]
    for w in workers.values():
        w.quit()
    labels = {"A": args.a_label, "B": args.b_label}
    result = {
        "benchmark": "sandbox_ab",
        "command": " ".join([".venv/bin/python", "benchmarks/sandbox_ab.py", *sys.argv[1:]]),
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
        "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "versions": {k: {"label": labels[k], "runtime_imported_from": where[k],
                         "start_to_first_result": summary_ms(starts[k]), "close": summary_ms(closes[k]),
                         "exec_docker": {c: summary_ms(t) for c, t in execs[k].items()}}
                     for k in workers},
    }
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
