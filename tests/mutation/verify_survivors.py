"""Re-check every survivor of run.py's JSON: apply it with ``mutmut apply`` in the workdir's copy, run its file's
target(s) through a fresh fork server, restore the file; prints each mutant's exit codes (0: it survives).

    .venv/bin/python tests/mutation/verify_survivors.py WORKDIR JSON [WORKDIR JSON ...]   (VERIFY_OUT=file.json)
"""
import json, os, shutil, subprocess, sys, time
from pathlib import Path
PY = sys.executable
WT = Path(__file__).resolve().parents[2]
TARGETS = {"model_runner.py": ["runner"], "sampler.py": ["sampler-all"], "llm_engine.py": ["llm-engine"],
           "scheduler.py": ["engine-fast", "forks"], "block_manager.py": ["engine-fast", "forks"],
           "grammar.py": ["grammar"], "sequence.py": ["engine-fast"], "types.py": ["engine-fast"],
           "config.py": ["engine-fast"], "workspace.py": ["workspace"]}
results = []
for workdir, js in [(sys.argv[i], sys.argv[i + 1]) for i in range(1, len(sys.argv), 2)]:
    repo = Path(workdir) / "repo"
    env = dict(os.environ, PYTHONPATH=str(Path(workdir) / "shim"), PYTHONDONTWRITEBYTECODE="1")
    sock = Path(workdir) / "verify.sock"
    server = subprocess.Popen([PY, "tests/mutation/forkserver.py", "serve", str(sock)], cwd=repo, env=env,
                              stdout=subprocess.PIPE, text=True)
    assert "ready" in server.stdout.readline()
    try:
        for m in json.load(open(js))["survived"]:
            rel = m["file"]
            subprocess.run([PY, "-m", "mutmut", "apply", str(m["id"])], cwd=repo, env=env, capture_output=True, check=True)
            changed = (repo / rel).read_bytes() != (WT / rel).read_bytes()
            codes = []
            try:
                for t in TARGETS[Path(rel).name]:
                    t0 = time.monotonic()
                    rc = subprocess.run([PY, "tests/mutation/forkserver.py", "client", str(sock), t], cwd=repo,
                                        env=env, capture_output=True, text=True)
                    codes.append((t, rc.returncode, round(time.monotonic() - t0), rc.stderr.strip()[-80:]))
                    if rc.returncode:
                        break
            finally:
                shutil.copy2(WT / rel, repo / rel)
            r = {"id": m["id"], "where": f"{rel}:{m['line']}", "applied": changed, "runs": codes}
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        server.kill()
if os.environ.get("VERIFY_OUT"):
    json.dump(results, open(os.environ["VERIFY_OUT"], "w"), indent=1)
