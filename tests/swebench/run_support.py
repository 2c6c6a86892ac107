"""Helpers of the `swebench run` tests: repositories that hold the future, reading a run folder."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from loopcoder.scenarios.swebench.dataset import find_repo_source, repo_key

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@localhost", GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")


def git(cwd: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, input=input, text=True, capture_output=True,
                          check=True).stdout.strip()


def leaky_repo(inst: dict, repos_dir: Path) -> str:
    """A bare repository for ``inst`` in ``repos_dir`` that also holds the fix: a later commit on main (the
    gold patch), a tag on it and another branch, as a real upstream clone does. Returns the fix's sha."""
    work = repos_dir / f".work-{repo_key(inst['repo'])}"
    subprocess.run(["git", "clone", "-q", str(find_repo_source(inst)), str(work)], env=GIT_ENV, check=True)
    git(work, "checkout", "-q", "-B", "main", inst["base_commit"])
    git(work, "apply", "-", input=inst["patch"])
    git(work, "commit", "-qam", f"fix {inst['instance_id']}")
    fix = git(work, "rev-parse", "HEAD")
    git(work, "tag", "v-fixed")
    git(work, "branch", "release")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(repos_dir / f"{repo_key(inst['repo'])}.git")],
                   env=GIT_ENV, check=True)
    bare = repos_dir / f"{repo_key(inst['repo'])}.git"
    git(bare, "fetch", "-q", str(work), "refs/tags/*:refs/tags/*")
    return fix


def pred_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "preds.jsonl").read_text().splitlines()]


def status(run_dir: Path, iid: str) -> dict:
    return json.loads((run_dir / "instances" / iid / "status.json").read_text())


def loopcoder_eval_report(run_dir: Path) -> dict:
    (path,) = run_dir.glob("loopcoder.*.json")
    return json.loads(path.read_text())
