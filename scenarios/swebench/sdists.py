"""Source distributions from the package index as git trees: download, extract, copy, commit.

Shared by the bundled mini dataset's builder (``benchmarks/swebench_mini/build.py``) and the task
synthesizer (``loopcoder nano synth``): ``pip download --no-deps --no-binary :all: PKG==VER`` into a
cache folder, extraction with tarfile's ``data`` filter, a copy that leaves out dropped paths, and
commits with a fixed author and date, so the same inputs always give the same commit ids.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from loopcoder.scenarios.swebench.errors import DatasetError


def download(package: str, version: str, dest: Path) -> Path:
    """The sdist of ``package==version`` in ``dest`` (downloaded when not there yet)."""
    found = find_sdist(package, version, dest)
    if found:
        return found
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d",
                           str(dest), f"{package}=={version}"], capture_output=True, text=True)
    found = find_sdist(package, version, dest)
    if proc.returncode != 0 or not found:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no sdist"]
        raise DatasetError(f"pip download {package}=={version} failed: {last[0]}")
    return found


def find_sdist(package: str, version: str, dest: Path) -> Path | None:
    names = {package.lower(), package.lower().replace("-", "_")}
    for p in Path(dest).glob("*.tar.gz"):
        stem = p.name[: -len(".tar.gz")]
        name, _, ver = stem.rpartition("-")
        if name.lower() in names and ver == str(version):
            return p
    return None


def extract(sdist: Path, dest: Path) -> Path:
    """Unpack ``sdist`` into the emptied ``dest``; returns its single top folder."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top


def copy_tree(src: Path, dst: Path, drop: list[str]) -> None:
    """Copy ``src`` into ``dst`` without paths matching ``drop`` (a name pattern of any component, or a
    path prefix); regular files only, mode 755 or 644."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if any(fnmatch.fnmatch(part, d) for d in drop for part in rel.split("/")) or any(
                rel == d or rel.startswith(d + "/") for d in drop):
            continue
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.is_file() and not path.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            os.chmod(target, 0o755 if os.access(path, os.X_OK) else 0o644)


def git(cwd: Path | None, *args: str, env: dict | None = None, input: str | None = None) -> str:
    """git with no user or system config; CalledProcessError on failure."""
    full = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, LC_ALL="C", **(env or {}))
    return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd, env=full, check=True,
                          capture_output=True, text=True, input=input).stdout


def commit_all(git_dir: Path, message: str, author: tuple[str, str], date: str, force: bool = False) -> str:
    """Stage everything in ``git_dir``'s work tree and commit it with a fixed author and date; the commit id.
    ``force``: also files the tree's own ``.gitignore`` ignores (an sdist can ship a generated
    ``version.py`` its repository ignores)."""
    env = {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1], "GIT_COMMITTER_NAME": author[0],
           "GIT_COMMITTER_EMAIL": author[1], "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    git(git_dir, "add", "-A", *(["--force"] if force else []))
    git(git_dir, "commit", "-q", "--no-gpg-sign", "--allow-empty", "-m", message, env=env)
    return git(git_dir, "rev-parse", "HEAD").strip()
