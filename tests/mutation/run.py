"""Mutation testing with mutmut 2 on a scratch copy of the working tree; results as JSON.

    .venv/bin/python tests/mutation/run.py FILE[:TARGET] ... [--workdir DIR] [--out JSON]

Each FILE (e.g. model_server/engine/sampler.py) is mutated by mutmut 2.5.1 (pinned in the dev extra), one
mutant at a time, and checked against the tests of TARGET (see TARGETS in forkserver.py; default
"engine"). The run happens in a copy of the working tree (tracked and untracked, not ignored files) under
--workdir, with ``loopcoder.*`` imported from that copy through a small shim package on PYTHONPATH, so the
worktree itself is never mutated and can be edited meanwhile. A fork server (forkserver.py) keeps torch
and transformers imported between mutants. Re-running with the same --workdir only re-tests the mutants
not killed before (mutmut's cache), against the tests as they are now (they are copied again).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ["agent", "tools", "runtime", "model_server", "scenarios", "configs"]
# this interpreter, not the mutmut script: the script's #! line can name another venv's python (a venv copied
# from another checkout), and mutmut's workers are spawned with that interpreter; when that venv is being
# reinstalled, a worker fails to start and mutmut waits for it forever
MUTMUT = [sys.executable, "-m", "mutmut"]


def copy_tree(dest: Path) -> None:
    """Copy the working tree's tracked and untracked (not ignored) files; keep mutmut's cache."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src, dst = ROOT / rel, dest / rel
        if not src.is_file():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() and dst.read_bytes() == src.read_bytes():
            continue
        shutil.copy2(src, dst)
    shutil.copy2(ROOT / "tests/mutation/mutmut_config.py", dest / "mutmut_config.py")


def make_shim(workdir: Path, repo: Path) -> Path:
    """A ``loopcoder`` package whose subpackages are the copy's top-level folders (pyproject's mapping)."""
    pkg = workdir / "shim" / "loopcoder"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for top in TOP:
        link = pkg / top
        if not link.exists():
            link.symlink_to(repo / top)
    return pkg.parent


def mutants_with_status(repo: Path, env: dict, status: str, show: bool = True) -> list:
    """The mutants with ``status``: their diffs as dicts, or only their ids when ``show`` is False."""
    ids = subprocess.run([*MUTMUT, "result-ids", status], cwd=repo, env=env, capture_output=True,
                         text=True).stdout.split()
    if not show:
        return [int(i) for i in ids]
    out = []
    for mid in ids:
        diff = subprocess.run([*MUTMUT, "show", mid], cwd=repo, env=env, capture_output=True, text=True).stdout
        m = re.search(r"^--- (\S+)", diff, re.M)
        hunk = re.search(r"^@@ -(\d+)", diff, re.M)
        minus = [l[1:].strip() for l in diff.splitlines() if l.startswith("-") and not l.startswith("---")]
        plus = [l[1:].strip() for l in diff.splitlines() if l.startswith("+") and not l.startswith("+++")]
        line = None
        if hunk:  # the hunk starts up to 3 context lines before the changed line
            ctx = 0
            for l in diff.split("@@", 2)[2].splitlines()[1:]:
                if l.startswith("-"):
                    break
                ctx += 1
            line = int(hunk.group(1)) + ctx
        out.append({"id": int(mid), "file": m.group(1) if m else None, "line": line,
                    "before": " / ".join(minus), "after": " / ".join(plus)})
    return out


def per_file_counts(cache: Path) -> dict:
    """{file: {status: count}} from mutmut's cache (statuses as ``mutants_with_status`` names them)."""
    import sqlite3

    names = {"ok_killed": "killed", "bad_survived": "survived", "bad_timeout": "timeout",
             "ok_suspicious": "suspicious", "skipped": "skipped", "untested": "untested"}
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT f.filename, m.status, COUNT(*) FROM Mutant m JOIN Line l ON m.line = l.id "
                          "JOIN SourceFile f ON l.sourcefile = f.id GROUP BY f.filename, m.status").fetchall()
    out: dict = {}
    for filename, status, count in rows:
        out.setdefault(filename, {})[names.get(status, status)] = count
    return out


def _workers(pid: int) -> list[int]:
    """mutmut's worker processes (multiprocessing spawn children) of ``pid``."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = []
    for kid in kids:
        try:
            if b"spawn_main" in Path(f"/proc/{kid}/cmdline").read_bytes():
                out.append(int(kid))
        except OSError:
            pass
    return out


def run_mutmut(cmd: list[str], repo: Path, env: dict, stall_s: float = 90.0) -> list[str]:
    """Run ``mutmut run`` to the end; the last lines of its output.

    mutmut 2 runs the mutants in a worker process and replaces it every 100 mutants; on this machine a
    worker sometimes vanished without a word (cause not found), and mutmut then waits for it forever. When
    mutmut has had no worker for ``stall_s`` seconds after its first one started, it is stopped and run
    again: its cache keeps every verdict, so only the mutants not yet tested are run.
    """
    for attempt in range(20):
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        lines: list[str] = []
        reader = __import__("threading").Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        seen_worker, last_worker = False, time.monotonic()
        while proc.poll() is None:
            time.sleep(5)
            if _workers(proc.pid):
                seen_worker, last_worker = True, time.monotonic()
            elif seen_worker and time.monotonic() - last_worker > stall_s:
                print(f"mutmut lost its worker; restarting it (attempt {attempt + 2})", flush=True)
                proc.kill()
                proc.wait()
                break
        else:
            reader.join(5)
            return "".join(lines).strip().splitlines()[-3:]
    return ["gave up after 20 restarts"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="FILE[:TARGET]")
    ap.add_argument("--workdir", default="/tmp/loopcoder-mutation")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--report-only", action="store_true", help="run nothing: the results already in --workdir")
    args = ap.parse_args()
    workdir = Path(args.workdir).resolve()
    repo = workdir / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        copy_tree(repo)
    shim = make_shim(workdir, repo)
    for cache in repo.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(shim), PYTHONDONTWRITEBYTECODE="1")
    sock = workdir / "fork.sock"
    server = subprocess.Popen([sys.executable, "tests/mutation/forkserver.py", "serve", str(sock)], cwd=repo,
                              env=env, stdout=subprocess.PIPE, text=True)
    assert "ready" in server.stdout.readline()
    summary = {"tool": "mutmut 2.5.1", "runs": []}
    try:
        for spec in [] if args.report_only else args.files:
            path, _, target = spec.partition(":")
            target = target or "engine"
            runner = f"{sys.executable} tests/mutation/forkserver.py client {sock} {target}"
            started = time.monotonic()
            tail = run_mutmut([*MUTMUT, "run", "--paths-to-mutate", path, "--runner", runner,
                               "--tests-dir", "tests", "--no-progress", "--simple-output"], repo, env)
            print(f"{path} ({target}): {time.monotonic() - started:.0f} s; {' | '.join(tail)}", flush=True)
            summary["runs"].append({"file": path, "target": target, "seconds": round(time.monotonic() - started)})
    finally:
        server.kill()
    for status in ("killed", "survived", "timeout", "suspicious", "skipped"):
        summary[status] = mutants_with_status(repo, env, status, show=status in ("survived", "timeout"))
    summary["counts"] = {s: len(summary[s]) for s in ("killed", "survived", "timeout", "suspicious", "skipped")}
    summary["per_file"] = per_file_counts(repo / ".mutmut-cache")
    print(json.dumps(summary["counts"]))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
