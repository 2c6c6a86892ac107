"""Git on the host that reads nothing a sandbox can write: pinned environment, explicit git dir and work tree.

A workspace tree is mounted read-write in its sandbox, ``.git`` included, so its config, hooks, attributes
files and object store are attacker-controlled (``filter.*.clean``, ``core.fsmonitor``, ``core.worktree``,
``include.path``, alternates, ...). No list of keys can be complete (filter and diff driver names are free), so
host-side git never reads that ``.git`` at all: every call here names a host-owned git directory (``git_dir``)
and, where files are involved, the tree as ``work_tree``; configuration comes only from that git directory and
the command-line settings below (system and global config are switched off). Used by ``runtime.workspace``
and ``tools.workspace``.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote

# Command-line config beats any config file, so even a private repository whose config was somehow changed
# cannot turn these back on. hooksPath=/dev/null: no hook is ever found. attributesFile/excludesFile: the
# host user's files would make results depend on who runs us (in-tree .gitattributes/.gitignore are
# repository content and still apply; without a configured driver they cannot run anything).
PINNED_CONFIG: tuple[tuple[str, str], ...] = (
    ("safe.directory", "*"),  # root works on trees owned by the sandbox user and the other way round
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.untrackedCache", "false"),
    ("core.splitIndex", "false"),
    ("core.attributesFile", "/dev/null"),
    ("core.excludesFile", "/dev/null"),
    ("core.autocrlf", "false"),
    ("core.pager", "cat"),
    ("protocol.ext.allow", "never"),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("diff.ignoreSubmodules", "all"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("credential.helper", ""),
    ("advice.detachedHead", "false"),
)

# Inherited variables that would redirect or reconfigure git (all GIT_* are dropped as well).
_DROPPED_ENV = frozenset({"PAGER", "LESS", "EDITOR", "VISUAL", "SSH_ASKPASS", "LANGUAGE", "LANG"})


class HostGitError(Exception):
    """A host git command failed; ``stderr`` is git's message (not yet redacted)."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        self.args_ = args
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"git {args[0] if args else ''} exited {returncode}: {last_line(stderr)}")


def pinned_env(git_dir: str | Path | None = None, work_tree: str | Path | None = None,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every host git call: no system/global config, no hooks, pager, prompts or replacements.

    ``extra`` may add ``GIT_INDEX_FILE``, ``GIT_OBJECT_DIRECTORY`` and the like.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k not in _DROPPED_ENV}
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_SYSTEM": "/dev/null",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_TERMINAL_PROMPT": "0",  # a URL that needs credentials fails instead of waiting for a password
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
        "GIT_PAGER": "cat",
        "PAGER": "cat",
        "LC_ALL": "C",
        "GIT_CONFIG_COUNT": str(len(PINNED_CONFIG)),
    })
    for i, (key, value) in enumerate(PINNED_CONFIG):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    if git_dir is not None:
        env["GIT_DIR"] = str(git_dir)
    if work_tree is not None:
        env["GIT_WORK_TREE"] = str(work_tree)
    env.update(extra or {})
    return env


def run_git(
    args: list[str],
    *,
    git_dir: str | Path | None,
    work_tree: str | Path | None = None,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run ``git ARGS`` with the pinned environment; stdout and stderr as bytes.

    ``git_dir`` must be host-owned (a private repository), or None for commands that make one (clone,
    init): those run in an empty host folder so git finds no repository around them. The work tree is
    ``work_tree`` (also the default cwd). HostGitError when ``check`` and git fails.
    """
    if cwd is None:
        cwd = work_tree if work_tree is not None else (git_dir if git_dir is not None else _neutral_dir())
    full_env = pinned_env(git_dir, work_tree, env)
    if git_dir is None:
        full_env["GIT_CEILING_DIRECTORIES"] = str(Path(cwd).parent)
    try:
        proc = subprocess.run(["git", "--no-pager", *args], cwd=cwd, env=full_env, input=input,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HostGitError(args, -1, f"timed out after {timeout} s") from None
    except OSError as exc:
        raise HostGitError(args, -1, f"cannot run git: {exc}") from None
    if check and proc.returncode != 0:
        raise HostGitError(args, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc


def git_out(args: list[str], **kwargs) -> str:
    """stdout of ``run_git`` as text (surrogateescape keeps odd bytes in paths round-trippable)."""
    return run_git(args, **kwargs).stdout.decode("utf-8", "surrogateescape")


_neutral_lock = threading.Lock()
_neutral: str | None = None
_empty_lock = threading.Lock()
_empty: str | None = None


def _neutral_dir() -> str:
    """An empty folder of ours to run repository-less commands in."""
    global _neutral
    with _neutral_lock:
        if _neutral is None or not os.path.isdir(_neutral):
            _neutral = tempfile.mkdtemp(prefix="loopcoder-hostgit-")
            atexit.register(shutil.rmtree, _neutral, True)
        return _neutral


def empty_git_dir() -> str:
    """A host-private empty bare repository (one per process): git with no history, no config of note."""
    global _empty
    with _empty_lock:
        if _empty is None or not os.path.isfile(os.path.join(_empty, "HEAD")):
            path = tempfile.mkdtemp(prefix="loopcoder-empty-git-")
            atexit.register(shutil.rmtree, path, True)
            run_git(["init", "-q", "--bare", "--template=", path], git_dir=None)
            _empty = path
        return _empty


def list_worktree_files(root: str | Path, timeout: float | None = 60) -> list[str]:
    """Paths under ``root`` that ``.gitignore`` files there do not exclude, without reading ``root/.git``.

    Runs ``ls-files --others --exclude-standard`` against an empty private repository with ``root`` as work
    tree, so every file counts as untracked: a tracked file that matches an ignore pattern is left out too.
    A nested repository shows up as one ``dir/`` entry. HostGitError when git fails.
    """
    out = git_out(["ls-files", "-z", "--others", "--exclude-standard"], git_dir=empty_git_dir(),
                  work_tree=root, timeout=timeout)
    return sorted({p for p in out.split("\0") if p})


# -- private repositories --------------------------------------------------------------------------

PRIVATE_SUFFIX = ".loopcoder-git"


def private_git_dir(tree: str | Path, root: str | Path | None = None) -> Path:
    """Where the host-private repository of workspace ``tree`` lives.

    Default: the sibling ``<tree>.loopcoder-git`` (same filesystem, found again from the tree path alone,
    removed with it; never inside the mount). With ``root``: ``root/<name>-<hash of the tree path>.git``.
    """
    tree = Path(tree).resolve()
    if root is None:
        return tree.with_name(tree.name + PRIVATE_SUFFIX)
    import hashlib

    digest = hashlib.sha256(str(tree).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path(root).resolve() / f"{tree.name}-{digest}.git"


def private_repo_problem(git_dir: Path) -> str | None:
    """Why ``git_dir`` cannot be trusted as a private repository (None when it can)."""
    try:
        st = os.lstat(git_dir)
    except FileNotFoundError:
        return "does not exist"
    import stat

    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory (a symlink?)"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this process (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return "is writable by other users"
    if not os.path.isfile(git_dir / "HEAD") or not os.path.isdir(git_dir / "objects"):
        return "is not a git directory"
    return None


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- credentials in URLs ---------------------------------------------------------------------------

# scheme://userinfo@host...: userinfo is everything up to the last "@" before the host part.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s@'\"]*(?:@[^/\s@'\"]*)*)@")


def strip_credentials(url: str) -> str:
    """``url`` without its user-info part (``https://user:token@host/x`` -> ``https://host/x``)."""
    return _USERINFO.sub(lambda m: m.group("scheme"), url)


def redact(text: str, *sources: str) -> str:
    """``text`` with credentials hidden: user-info of any URL in it, and every secret found in ``sources``.

    ``sources`` are the URLs the text may quote (git may print them decoded or re-encoded).
    """
    secrets: set[str] = set()
    for src in sources:
        for m in _USERINFO.finditer(str(src)):
            info = m.group("userinfo")
            for s in (info, unquote(info), *info.split(":", 1), *unquote(info).split(":", 1)):
                if len(s) >= 4:  # short user names ("git") are not secrets and would mangle text
                    secrets.add(s)
    text = _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def last_line(text: str) -> str:
    """The last meaningful line of git's stderr (hints and progress left out)."""
    lines = [l.strip() for l in text.strip().splitlines()
             if l.strip() and not l.lstrip().startswith(("hint:", "stderr:"))]
    return (lines[-1] if lines else "(no output)").strip("' ")
