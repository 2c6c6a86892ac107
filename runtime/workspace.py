"""Git workspaces on the host: clone, check out, branch, extract the agent's patch, apply patches.

Everything goes through GitPython's ``git`` command wrapper. No host-side code here reads file contents
through the working tree: git records symlinks as links, so a link pointing outside the workspace is
never followed. The workspace's own index is left alone: diffs are built in a temporary index.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from loopcoder.runtime.config import WorkspaceConfig
from loopcoder.runtime.errors import PatchApplyError, WorkspaceError

# Root may operate on workspaces handed to the sandbox user, and the other way round: git's
# "dubious ownership" check would refuse them. Command-line level config, so it is honoured.
GIT_ENV = {
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "safe.directory",
    "GIT_CONFIG_VALUE_0": "*",
    "GIT_TERMINAL_PROMPT": "0",  # a URL that needs credentials fails instead of waiting for a password
    "LC_ALL": "C",
}
# Output must not depend on the user's git config (prefixes, colors, rename limits, external diff tools).
DIFF_FLAGS = ["--no-color", "--no-ext-diff", "--full-index", "-M", "--src-prefix=a/", "--dst-prefix=b/"]
_GITLINK = "160000"


class ExcludedPath(BaseModel):
    path: str
    reason: Literal["binary", "nested git repository", "configured exclusion"]


class PatchResult(BaseModel):
    """The diff of a workspace against its base commit.

    ``text`` ends with a newline, or is "" when nothing changed (``empty``). ``verified``: ``git apply
    --check`` accepted it on a clean checkout of the base commit.
    """

    text: str
    base_commit: str
    files: list[str]
    excluded: list[ExcludedPath]
    empty: bool
    verified: bool


class ApplyAttempt(BaseModel):
    method: str
    ok: bool
    output: str


class ApplyResult(BaseModel):
    """Which method applied the patch (``method``), and what each method tried said."""

    ok: bool
    method: str | None
    attempts: list[ApplyAttempt]

    def summary(self) -> str:
        if self.ok:
            return f"applied with {self.method}"
        return "; ".join(f"{a.method}: {_first_line(a.output)}" for a in self.attempts)


class GitWorkspace:
    """A git working tree and the commit its patch is measured against (``base_commit``)."""

    def __init__(self, path: str | Path, base_commit: str | None = None, config: WorkspaceConfig | None = None) -> None:
        import git

        self.path = Path(path).resolve()
        self.config = config or WorkspaceConfig()
        try:
            self.repo = git.Repo(self.path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise WorkspaceError(f"{self.path} is not a git working tree") from None
        if self.repo.bare:
            raise WorkspaceError(f"{self.path} is a bare repository; clone it into a workspace first")
        self.repo.git.update_environment(**GIT_ENV)
        self.base_commit = self.rev_parse(base_commit or "HEAD")

    # -- setting up ------------------------------------------------------------------------------

    @classmethod
    def clone(
        cls,
        source: str | Path,
        dest: str | Path,
        commit: str | None = None,
        branch: str | None = None,
        config: WorkspaceConfig | None = None,
    ) -> "GitWorkspace":
        """Clone ``source`` (URL, working tree or bare repository) to ``dest``; check out ``commit``.

        ``branch``, when given, is created at that commit and checked out. The commit checked out becomes
        the base commit of extracted patches.
        """
        import git

        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise WorkspaceError(f"clone destination {dest} exists and is not empty")
        src = str(source)
        if os.path.exists(src):
            src = str(Path(src).resolve())
        try:
            git.Repo.clone_from(src, dest, env=dict(os.environ, **GIT_ENV), no_checkout=commit is not None)
        except git.GitCommandError as exc:
            raise WorkspaceError(f"git clone {source} failed: {_git_error(exc)}") from None
        ws = cls(dest, config=config)
        if commit is not None:
            ws.checkout(commit)
        if branch:
            ws.create_branch(branch)
        ws.base_commit = ws.rev_parse("HEAD")
        ws._set_identity()
        return ws

    def checkout(self, commit: str) -> str:
        """Check out ``commit`` (detached), fetching it from origin when the clone lacks it; returns its sha."""
        import git

        try:
            sha = self.rev_parse(commit)
        except WorkspaceError:
            try:
                self.repo.git.fetch("origin", commit)
            except git.GitCommandError as exc:
                raise WorkspaceError(f"commit {commit} not found in {self.path} nor in origin: {_git_error(exc)}") from None
            sha = self.rev_parse("FETCH_HEAD")
        try:
            self.repo.git.checkout("--detach", "--force", sha)
        except git.GitCommandError as exc:
            raise WorkspaceError(f"git checkout {commit} failed: {_git_error(exc)}") from None
        self.base_commit = sha
        return sha

    def create_branch(self, name: str, start: str | None = None) -> None:
        """Create branch ``name`` at ``start`` (default HEAD) and switch to it."""
        import git

        try:
            self.repo.git.checkout("-B", name, start or "HEAD")
        except git.GitCommandError as exc:
            raise WorkspaceError(f"cannot create branch {name}: {_git_error(exc)}") from None

    def rev_parse(self, rev: str) -> str:
        import git

        try:
            return self.repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")
        except git.GitCommandError:
            raise WorkspaceError(f"no commit {rev!r} in {self.path}") from None

    def _set_identity(self) -> None:
        with self.repo.config_writer() as cw:
            if not cw.has_option("user", "name"):
                cw.set_value("user", "name", self.config.git_user_name)
            if not cw.has_option("user", "email"):
                cw.set_value("user", "email", self.config.git_user_email)

    # -- patches ---------------------------------------------------------------------------------

    def extract_patch(self, exclude: list[str] | tuple[str, ...] = ()) -> PatchResult:
        """The diff of the working tree against ``base_commit``: tracked changes and new files.

        Left out (and listed in ``excluded``): binary files, nested git repositories, files ignored by
        .gitignore, and paths matching ``exclude`` or ``workspace.exclude_paths`` (git glob pathspecs).
        The patch is checked with ``git apply --check`` on a clean checkout of the base commit;
        WorkspaceError if that fails (a bug: the patch could not be replayed).
        """
        patterns = list(self.config.exclude_paths) + list(exclude)
        excluded: list[ExcludedPath] = []
        specs = [":(exclude,glob)" + p for p in patterns]
        for nested in self._nested_repos():
            excluded.append(ExcludedPath(path=nested, reason="nested git repository"))
            specs.append(":(exclude,literal)" + nested)
        with tempfile.TemporaryDirectory(prefix="loopcoder-diff-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git(["read-tree", self.base_commit], env=env)
            self._git(["add", "-A", "--", "."] + specs, env=env)
            # What configured exclusions removed (files that changed but are not in the temporary index).
            if patterns:
                changed = self._z(["diff", "--name-only", "-z", self.base_commit, "--"] +
                                  [":(glob)" + p for p in patterns], env=env, cached=False)
                untracked = self._z(["ls-files", "-z", "--others", "--exclude-standard", "--"] +
                                    [":(glob)" + p for p in patterns])
                for p in sorted(set(changed) | set(untracked)):
                    excluded.append(ExcludedPath(path=p, reason="configured exclusion"))
            # numstat says "-\t-" for binary files; gitlinks (nested repos, submodule moves) cannot be replayed.
            raw = self._z(["diff", "--cached", "--numstat", "-z", "-M", self.base_commit], env=env)
            binaries = _binary_paths(raw)
            for p in sorted(binaries):
                excluded.append(ExcludedPath(path=p, reason="binary"))
            for p in self._gitlinks(env):
                if p not in binaries:
                    excluded.append(ExcludedPath(path=p, reason="nested git repository"))
                    binaries.add(p)
            final = ["--"] + [":(exclude,literal)" + p for p in sorted(binaries)]
            text = self._git(["diff", "--cached", *DIFF_FLAGS, self.base_commit] + final, env=env)
            files = self._z(["diff", "--cached", "--name-only", "-z", "-M", self.base_commit] + final, env=env)
        if text and not text.endswith("\n"):
            text += "\n"
        result = PatchResult(text=text, base_commit=self.base_commit, files=files, excluded=excluded,
                             empty=not text, verified=False)
        if text:
            err = self._check_on_clean_checkout(text, files)
            if err:
                raise WorkspaceError(f"extracted patch does not apply to a clean checkout of {self.base_commit[:12]}: {err}")
            result.verified = True
        return result

    def apply_patch(self, patch: str, fuzz: int = 3, raise_on_failure: bool = True) -> ApplyResult:
        """Apply ``patch`` to the working tree: ``git apply``, then ``git apply --3way``, then ``patch --fuzz``.

        A method that fails leaves the tree (and index) as it found it. PatchApplyError (with ``.result``)
        when no method worked, unless ``raise_on_failure`` is false.
        """
        if not patch.strip():
            raise WorkspaceError("empty patch: nothing to apply")
        data = patch.encode("utf-8", "surrogateescape")
        if not data.endswith(b"\n"):
            data += b"\n"
        touched = _patch_paths(data)
        attempts: list[ApplyAttempt] = []
        with tempfile.TemporaryDirectory(prefix="loopcoder-apply-") as tmp:
            pf = Path(tmp) / "change.patch"
            pf.write_bytes(data)
            methods = [
                ("git apply", ["git", "apply", "--whitespace=nowarn", str(pf)]),
                ("git apply --3way", ["git", "apply", "--3way", "--whitespace=nowarn", str(pf)]),
                (f"patch --fuzz={fuzz}", ["patch", "-p1", f"--fuzz={fuzz}", "--batch", "--forward",
                                          "--no-backup-if-mismatch", "--reject-file=-", "-i", str(pf)]),
            ]
            for name, cmd in methods:
                if cmd[0] == "patch" and not shutil.which("patch"):
                    attempts.append(ApplyAttempt(method=name, ok=False, output="GNU patch is not installed"))
                    continue
                snapshot = self._snapshot(touched)
                if cmd[0] == "patch":  # dry run first: patch applies hunks one by one and would leave halves
                    dry = self._run(cmd[:-2] + ["--dry-run", "-i", str(pf)])
                    if dry.returncode != 0:
                        attempts.append(ApplyAttempt(method=name, ok=False, output=dry.stdout))
                        continue
                proc = self._run(cmd)
                ok = proc.returncode == 0 and not (cmd[0] == "git" and "--3way" in cmd and _has_conflicts(self, touched))
                attempts.append(ApplyAttempt(method=name, ok=ok, output=proc.stdout))
                if ok:
                    return ApplyResult(ok=True, method=name, attempts=attempts)
                self._restore(snapshot)
        result = ApplyResult(ok=False, method=None, attempts=attempts)
        if raise_on_failure:
            err = PatchApplyError(f"patch does not apply ({result.summary()})")
            err.result = result
            raise err
        return result

    # -- helpers ---------------------------------------------------------------------------------

    def _git(self, args: list[str], env: dict[str, str] | None = None) -> str:
        import git

        try:
            out = self.repo.git.execute(
                ["git", *args], env=env, stdout_as_string=False, strip_newline_in_stdout=False,
            )
        except git.GitCommandError as exc:
            raise WorkspaceError(f"git {args[0]} failed in {self.path}: {_git_error(exc)}") from None
        return out.decode("utf-8", "surrogateescape")

    def _z(self, args: list[str], env: dict[str, str] | None = None, cached: bool = True) -> list[str]:
        return [p for p in self._git(args, env=env).split("\0") if p]

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=self.path, env=dict(os.environ, **GIT_ENV), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")

    def _nested_repos(self) -> list[str]:
        # Untracked folders that hold their own repository show up as "dir/" in ls-files --others.
        out = self._z(["ls-files", "-z", "--others", "--exclude-standard"])
        return [p.rstrip("/") for p in out if p.endswith("/")]

    def _gitlinks(self, env: dict[str, str]) -> list[str]:
        raw = self._git(["diff", "--cached", "--raw", "-z", "--no-renames", self.base_commit], env=env)
        parts = raw.split("\0")
        out = []
        for i in range(0, len(parts) - 1, 2):
            meta = parts[i].lstrip(":").split()
            if len(meta) >= 2 and _GITLINK in meta[:2]:
                out.append(parts[i + 1])
        return out

    def _check_on_clean_checkout(self, text: str, files: list[str]) -> str | None:
        """git apply --check in a fresh checkout (only the touched files) of the base commit; error or None."""
        with tempfile.TemporaryDirectory(prefix="loopcoder-check-") as tmp:
            tree = Path(tmp) / "tree"
            tree.mkdir()
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            # Old paths of renames and deletions must exist there too: take them from the patch headers.
            wanted = sorted(set(files) | set(_patch_paths(text.encode("utf-8", "surrogateescape"))))
            existing = self._z(["ls-tree", "-r", "-z", "--name-only", self.base_commit, "--"]
                               + [":(literal)" + p for p in wanted]) if wanted else []
            if existing:
                self._git(["--work-tree", str(tree), "checkout", self.base_commit, "--"]
                          + [":(literal)" + p for p in existing], env=env)
            pf = Path(tmp) / "check.patch"
            pf.write_bytes(text.encode("utf-8", "surrogateescape"))
            proc = subprocess.run(["git", "apply", "--check", str(pf)], cwd=tree, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace",
                                  env=dict(os.environ, **GIT_ENV, GIT_CEILING_DIRECTORIES=tmp))
            return None if proc.returncode == 0 else _first_line(proc.stdout)

    def _snapshot(self, paths: list[str]) -> dict:
        index = self.path / ".git" / "index"
        snap = {"index": index.read_bytes() if index.is_file() else None, "files": {}}
        for p in paths:
            f = self.path / p
            snap["files"][p] = f.read_bytes() if f.is_file() and not f.is_symlink() else (
                ("link", os.readlink(f)) if f.is_symlink() else None)
        return snap

    def _restore(self, snap: dict) -> None:
        for p, content in snap["files"].items():
            f = self.path / p
            if f.is_symlink() or f.is_file():
                f.unlink()
            if content is None:
                continue
            f.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, tuple):
                os.symlink(content[1], f)
            else:
                f.write_bytes(content)
        for p in snap["files"]:  # folders a failed attempt created and left empty
            d = (self.path / p).parent
            while d != self.path and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
                d = d.parent
        index = self.path / ".git" / "index"
        if snap["index"] is not None:
            index.write_bytes(snap["index"])


def _git_error(exc) -> str:
    text = (exc.stderr or exc.stdout or str(exc))
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [l.strip() for l in text.strip().splitlines() if l.strip() and not l.strip().startswith("stderr:")]
    return (lines[-1] if lines else str(exc)).strip("' ")


def _first_line(text: str) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[0].strip() if lines else "(no output)"


def _binary_paths(numstat_z: list[str]) -> set[str]:
    """Paths (old and new for renames) whose numstat is "-\t-" in ``git diff --numstat -z`` output."""
    out: set[str] = set()
    i = 0
    while i < len(numstat_z):
        added, deleted, rest = (numstat_z[i].split("\t", 2) + ["", ""])[:3]
        if rest:
            paths, i = [rest], i + 1
        else:  # rename: "a\td\t" then old and new path as separate fields
            paths, i = numstat_z[i + 1 : i + 3], i + 3
        if added == "-" and deleted == "-":
            out.update(paths)
    return out


_HEADER = re.compile(rb"^(?:--- |\+\+\+ |rename from |rename to |copy from |copy to )(.*)$", re.M)


def _patch_paths(data: bytes) -> list[str]:
    """Repository paths a patch reads or writes, from its ---/+++ and rename headers."""
    out: list[str] = []
    for m in _HEADER.finditer(data):
        line = m.group(0)
        p = m.group(1).split(b"\t")[0].strip()
        if p == b"/dev/null":
            continue
        if line.startswith((b"--- ", b"+++ ")):
            if p.startswith(b'"'):
                p = _unquote_c(p)
            if p[:2] in (b"a/", b"b/"):
                p = p[2:]
        name = p.decode("utf-8", "surrogateescape")
        if name and name not in out:
            out.append(name)
    return out


def _unquote_c(p: bytes) -> bytes:
    """git's C-style quoted path ("a/\\303\\251.txt") back to bytes."""
    inner = p[1:-1] if p.endswith(b'"') else p[1:]
    return inner.decode("unicode_escape").encode("latin-1")


def _has_conflicts(ws: GitWorkspace, paths: list[str]) -> bool:
    out = ws._git(["ls-files", "-u", "-z", "--"] + [":(literal)" + p for p in paths]) if paths else ""
    return bool(out.strip("\0"))
