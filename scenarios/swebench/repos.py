"""Repository sources of instances: isolated checkouts and the no-future-commits check.

A checkout an agent works in must hold nothing from after the base commit: a later commit, tag or
stray object leaks the fix (``git log --all``, ``git cat-file``). `isolated_checkout` makes such a
checkout (one branch at the base commit, no remote, no tags, no reflog, unreachable objects pruned);
`future_objects` lists what a repository holds beyond the base commit's history.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from loopcoder.runtime.hostgit import redact, strip_credentials
from loopcoder.scenarios.swebench.dataset import find_repo_source, repo_key
from loopcoder.scenarios.swebench.errors import DatasetError

BRANCH = "main"


def _git(cwd: Path | None, *args: str, check: bool = True) -> str:
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    proc = subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise DatasetError(f"git {args[0]} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout


def isolated_checkout(inst: dict, dest: Path, repos_dir: Path | None = None, source: Path | None = None) -> Path:
    """A working tree of ``inst`` at its base commit whose repository holds only the base's history.

    ``source``: the repository to fetch from (default: ``find_repo_source(inst, repos_dir)``).
    """
    source = source or find_repo_source(inst, repos_dir)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise DatasetError(f"checkout destination {dest} exists and is not empty")
    base = inst["base_commit"]
    _git(None, "init", "-q", "-b", BRANCH, str(dest))
    # Fetch only the base commit's history: nothing else (other branches, tags) ever enters the repository.
    _git(dest, "fetch", "-q", "--no-tags", str(source.resolve()), f"{base}:refs/heads/{BRANCH}", check=False)
    if not _git(dest, "rev-parse", "-q", "--verify", f"{base}^{{commit}}", check=False).strip():
        # Sources that refuse to serve a commit by id (uploadpack.allowAnySHA1InWant off): fetch every
        # ref into a throwaway namespace, then drop it and prune.
        _git(dest, "fetch", "-q", "--no-tags", str(source.resolve()), "+refs/*:refs/lc-source/*")
        _git(dest, "rev-parse", "-q", "--verify", f"{base}^{{commit}}")
        _git(dest, "update-ref", f"refs/heads/{BRANCH}", base)
        for ref in _git(dest, "for-each-ref", "--format=%(refname)", "refs/lc-source").split():
            _git(dest, "update-ref", "-d", ref)
    _git(dest, "checkout", "-q", "-f", BRANCH)
    _git(dest, "reflog", "expire", "--expire=now", "--all")
    _git(dest, "gc", "-q", "--prune=now")
    leaks = future_objects(dest, base)
    if leaks:
        raise DatasetError(f"checkout of {inst['instance_id']} still holds {len(leaks)} object(s) after the base commit")
    return dest


def future_objects(git_dir: Path, base: str) -> list[str]:
    """Refs not contained in ``base`` and objects unreachable from it (empty: nothing leaks)."""
    out = []
    for line in _git(git_dir, "for-each-ref", "--format=%(objectname) %(refname)").splitlines():
        sha, ref = line.split(" ", 1)
        if ref.startswith("refs/tags/"):
            out.append(ref)
        elif subprocess.run(["git", "-c", "safe.directory=*", "merge-base", "--is-ancestor", sha, base],
                            cwd=git_dir, capture_output=True).returncode != 0:
            out.append(ref)
    reachable = {line.split(" ", 1)[0] for line in _git(git_dir, "rev-list", "--objects", base).splitlines()}
    every = _git(git_dir, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)").split()
    out += [o for o in every if o not in reachable]
    return out


def check_repository(inst: dict, repos_dir: Path | None = None) -> str:
    """One-line verdict on ``inst``'s repository source: base commit present, nothing after it."""
    source = find_repo_source(inst, repos_dir)
    with tempfile.TemporaryDirectory(prefix="loopcoder-repo-check-") as tmp:
        bare = Path(tmp) / "repo.git"
        _git(None, "clone", "-q", "--bare", "--no-local", str(source.resolve()), str(bare))
        if not _git(bare, "rev-parse", "-q", "--verify", f"{inst['base_commit']}^{{commit}}", check=False).strip():
            raise DatasetError(f"{inst['instance_id']}: base commit {inst['base_commit'][:12]} is not in {source}")
        leaks = future_objects(bare, inst["base_commit"])
    if leaks:
        return f"LEAKS {len(leaks)} ref(s)/object(s) after the base commit ({source.name})"
    return f"ok ({source.name})"


def repo_source(inst: dict, repos_dir: Path | None, clone_url: str | None, cache: Path,
                timeout_s: float = 900.0) -> Path:
    """Where ``inst``'s repository comes from: ``repos_dir`` (or the bundled ones), else a clone of ``clone_url``.

    A clone is a bare mirror made once under ``cache`` (``OWNER__NAME.git``; made in a temporary folder
    and renamed, so concurrent runs never see half of one) and reused; it may hold the repository's
    whole history: `isolated_checkout` keeps only the base commit's. DatasetError (one line) when the
    repository is in neither place.
    """
    try:
        return find_repo_source(inst, repos_dir)
    except DatasetError as missing:
        if not clone_url:
            raise DatasetError(f"{missing} (cloning is off: run.clone_url is null)") from None
        key = repo_key(inst["repo"])
        cached = Path(cache) / f"{key}.git"
        with _clone_lock(key):
            return _mirror(inst, missing, clone_url, cached, key, timeout_s)


def _has_commit(git_dir: Path, sha: str) -> bool:
    return git_dir.is_dir() and bool(_git(git_dir, "rev-parse", "-q", "--verify", f"{sha}^{{commit}}",
                                          check=False).strip())


_clone_locks: dict[str, threading.Lock] = {}
_clone_locks_guard = threading.Lock()


def _clone_lock(key: str) -> threading.Lock:
    with _clone_locks_guard:
        return _clone_locks.setdefault(key, threading.Lock())


def _mirror(inst: dict, missing: DatasetError, clone_url: str, cached: Path, key: str, timeout_s: float) -> Path:
    if _has_commit(cached, inst["base_commit"]):
        return cached
    url = clone_url.format(repo=inst["repo"], key=key)
    shown = strip_credentials(url)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cached.parent))
    try:
        env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0",
                   LC_ALL="C")
        try:
            proc = subprocess.run(["git", "clone", "-q", "--mirror", "--", url, str(tmp / "repo.git")], env=env,
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DatasetError(f"{missing}; cloning {shown} took over {timeout_s:g} s") from None
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["git clone failed"])[-1]
            raise DatasetError(f"{missing}; cloning {shown} failed: {redact(why, url)}") from None
        if not _has_commit(tmp / "repo.git", inst["base_commit"]):
            raise DatasetError(f"{shown} has no commit {inst['base_commit'][:12]} (instance {inst['instance_id']})")
        if _has_commit(cached, inst["base_commit"]):
            return cached  # another process made it meanwhile
        if cached.exists():
            shutil.rmtree(cached)  # a stale mirror without the base commit
        os.rename(tmp / "repo.git", cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cached
