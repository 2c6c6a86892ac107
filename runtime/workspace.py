"""Git workspaces on the host: clone, check out, branch, extract the agent's patch, apply patches.

Trust model. The tree (the folder mounted read-write at /testbed) belongs to the sandbox, its ``.git``
included: config, hooks, attributes files, ``core.worktree``, alternates and objects there are all
attacker-controlled. So the authoritative repository is a **host-private bare repository outside the tree**
(``hostgit.private_git_dir``: by default the sibling ``<tree>.loopcoder-git``), and every host git command
runs through ``hostgit.run_git`` with that git dir, the tree as explicit work tree and a pinned environment
(no system/global config, no hooks, no fsmonitor, no pager, no replace objects). The tree keeps a real
``.git`` so git works inside the sandbox; after set-up the host never runs git on it and only writes plain
files into it (a pack of new objects, ``HEAD``, a branch ref, ``index``) through ``runtime.treefs``, which
never follows a symlink. In-tree ``.gitignore``/``.gitattributes`` files are repository content and still
apply: attributes cannot run anything without a driver, and drivers could only come from the private config.

``GitWorkspace(path)`` on a tree that has no private repository yet makes one from the tree's ``.git`` at that
moment: open a workspace before any sandbox touches it (re-opening finds the private repository and reads
nothing from the tree's ``.git``).
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel

from loopcoder.runtime.config import WorkspaceConfig
from loopcoder.runtime.errors import PatchApplyError, WorkspaceError
from loopcoder.runtime.hostgit import (
    HostGitError,
    git_out,
    last_line,
    private_git_dir,
    private_repo_problem,
    redact,
    remove_tree,
    run_git,
    strip_credentials,
)
from loopcoder.runtime.treefs import Entry, Tree, TreePathError

# Output must not depend on any git config (prefixes, colors, rename limits, external diff tools, textconv).
DIFF_FLAGS = ["--no-color", "--no-ext-diff", "--no-textconv", "--full-index", "-M", "--src-prefix=a/",
              "--dst-prefix=b/"]
_GITLINK = "160000"
_TREE_REFS = "refs/loopcoder/tree/"  # in the private repository: commits whose objects the tree's .git holds


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
    """A git working tree, its host-private repository (``git_dir``) and the commit patches are measured against.

    ``base_commit`` and ``HEAD`` come from the private repository, never from the tree's ``.git``.
    """

    def __init__(self, path: str | Path, base_commit: str | None = None, config: WorkspaceConfig | None = None) -> None:
        self.path = Path(path).resolve()
        self.config = config or WorkspaceConfig()
        if not self.path.is_dir():
            raise WorkspaceError(f"{self.path} is not a git working tree")
        self.git_dir = _private_dir_for(self.path, self.config)
        self.tree = Tree(self.path)
        problem = private_repo_problem(self.git_dir)
        if problem == "does not exist":
            self._adopt_tree()
        elif problem:
            raise WorkspaceError(f"private git directory {self.git_dir} {problem}; remove it and open the workspace again")
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
        env: dict[str, str] | None = None,
    ) -> "GitWorkspace":
        """Clone ``source`` (URL, working tree or bare repository) to ``dest``; check out ``commit``.

        First a host-private bare clone (``git_dir``), then the tree at ``dest`` as an ordinary clone of it
        (objects copied, never hardlinked: the sandbox user gets the tree's files). The tree's origin is the
        source URL without credentials. ``branch``, when given, is created at that commit and checked out.
        The commit checked out becomes the base commit of extracted patches. Credentials in ``source``
        appear in no message. ``env`` is added to the environment of the git commands that reach ``source``
        (a ``GIT_ASKPASS`` helper and its variables, so a token needs to be neither in the URL nor on a
        command line); it is not stored anywhere.
        """
        config = config or WorkspaceConfig()
        dest = Path(dest).resolve()
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise WorkspaceError(f"clone destination {dest} exists and is not empty")
        git_dir = _private_dir_for(dest, config)
        if os.path.lexists(git_dir):
            raise WorkspaceError(f"private git directory {git_dir} already exists; remove it or clone elsewhere")
        src = shown_src = str(source)
        if os.path.exists(src):
            shown_src = src = str(Path(src).resolve())
            # A tree some sandbox used: clone its private repository, never its sandbox-writable .git.
            theirs = _private_dir_for(Path(src), config)
            if private_repo_problem(theirs) is None:
                src = str(theirs)
        try:
            _make_private_repo(src, git_dir, env)
        except HostGitError as exc:
            raise WorkspaceError(f"git clone {redact(str(source), str(source))} failed: "
                                 f"{redact(last_line(exc.stderr), str(source))}") from None
        made_dest = not dest.exists()
        try:
            sha = _rev_parse(git_dir, "HEAD") if commit is None else _resolve_or_fetch(git_dir, commit, env=env)
            # The tree is made here, by the host, and no sandbox has seen it yet: plain git on it is safe now.
            run_git(["clone", "-q", "--no-hardlinks", "--no-checkout", "--template=", "--", str(git_dir), str(dest)],
                    git_dir=None)
            tree_git = dest / ".git"
            run_git(["config", "remote.origin.url", strip_credentials(shown_src)], git_dir=tree_git)
            for key, value in (("user.name", config.git_user_name), ("user.email", config.git_user_email)):
                run_git(["config", key, value], git_dir=tree_git)
            run_git(["checkout", "-q", "-f", *(["--detach", sha] if commit is not None else [])],
                    git_dir=tree_git, work_tree=dest)
            _set_head(git_dir, sha)
            run_git(["update-ref", _TREE_REFS + sha, sha], git_dir=git_dir)
        except (HostGitError, WorkspaceError) as exc:
            # Leave nothing half made: a retry must not meet "already exists".
            remove_tree(git_dir)
            if made_dest:
                remove_tree(dest)
            else:
                for child in dest.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        remove_tree(child)
                    else:
                        child.unlink()
            msg = redact(last_line(exc.stderr), str(source)) if isinstance(exc, HostGitError) else str(exc)
            raise WorkspaceError(f"cannot set up workspace {dest}: {msg}") from None
        ws = cls(dest, config=config)
        if branch:
            ws.create_branch(branch)
        ws.base_commit = sha
        return ws

    def _adopt_tree(self) -> None:
        """Make the private repository from the tree's own .git (trusted only because no sandbox ran yet)."""
        dotgit = self.path / ".git"
        if not os.path.lexists(dotgit):
            if (self.path / "HEAD").is_file() and (self.path / "objects").is_dir():
                raise WorkspaceError(f"{self.path} is a bare repository; clone it into a workspace first")
            raise WorkspaceError(f"{self.path} is not a git working tree")
        origin = None
        if dotgit.is_dir() and (dotgit / "config").is_file():
            proc = run_git(["config", "--file", str(dotgit / "config"), "--get", "remote.origin.url"],
                           git_dir=None, check=False)
            origin = proc.stdout.decode("utf-8", "surrogateescape").strip() or None
        try:
            _make_private_repo(str(self.path), self.git_dir)
        except HostGitError as exc:
            raise WorkspaceError(f"cannot read the repository of {self.path}: {redact(last_line(exc.stderr))}") from None
        try:
            # The private origin must never be the tree itself: fetching from it would run git on its .git.
            if origin and Path(origin).resolve() != self.path:
                run_git(["config", "remote.origin.url", origin], git_dir=self.git_dir)
            else:
                run_git(["config", "--remove-section", "remote.origin"], git_dir=self.git_dir, check=False)
            sha = _rev_parse(self.git_dir, "HEAD")
            _set_head(self.git_dir, sha)
            run_git(["update-ref", _TREE_REFS + sha, sha], git_dir=self.git_dir)
        except (HostGitError, WorkspaceError) as exc:
            remove_tree(self.git_dir)
            msg = exc.stderr if isinstance(exc, HostGitError) else str(exc)
            raise WorkspaceError(f"{self.path} has no commit checked out: {last_line(msg)}") from None

    def checkout(self, commit: str) -> str:
        """Check out ``commit`` (detached), fetching it from origin when the clone lacks it; returns its sha.

        Like ``git checkout --force``: tracked files become the commit's, files of the old commit that it
        lacks are deleted, untracked files stay. It becomes the base commit.
        """
        sha = _resolve_or_fetch(self.git_dir, commit, where=str(self.path))
        self._move_tree(sha, branch=None)
        self.base_commit = sha
        return sha

    def create_branch(self, name: str, start: str | None = None) -> None:
        """Create branch ``name`` in the tree at ``start`` (default HEAD) and switch to it."""
        if name.startswith("-") or run_git(["check-ref-format", f"refs/heads/{name}"], git_dir=None,
                                            check=False).returncode != 0:
            raise WorkspaceError(f"cannot create branch {name}: not a valid branch name")
        self._move_tree(self.rev_parse(start or "HEAD"), branch=name)

    def rev_parse(self, rev: str) -> str:
        """The commit sha ``rev`` names in the private repository; WorkspaceError when there is none."""
        return _rev_parse(self.git_dir, rev, where=str(self.path))

    # -- patches ---------------------------------------------------------------------------------

    def extract_patch(self, exclude: list[str] | tuple[str, ...] = ()) -> PatchResult:
        """The diff of the working tree against ``base_commit``: tracked changes and new files.

        Left out (and listed in ``excluded``): binary files, nested git repositories, files ignored by
        .gitignore, and paths matching ``exclude`` or ``workspace.exclude_paths`` (git glob pathspecs).
        The patch is checked with ``git apply --check`` on a clean checkout of the base commit;
        WorkspaceError if that fails (a bug: the patch could not be replayed). Reads the tree's files only
        (through the private repository, in a temporary index and object store): extract it while no
        sandbox command runs, or a file swapped mid-read could put other content in the patch.
        """
        patterns = list(self.config.exclude_paths) + list(exclude)
        excluded: list[ExcludedPath] = []
        specs = [":(exclude,glob)" + p for p in patterns]
        with self._scratch("loopcoder-diff-") as (_, env):
            g = lambda args: self._git(args, env=env)  # noqa: E731
            z = lambda args: [p for p in g(args).split("\0") if p]  # noqa: E731
            g(["read-tree", self.base_commit])
            # Untracked folders that hold their own repository show up as "dir/" in ls-files --others.
            for nested in [p.rstrip("/") for p in z(["ls-files", "-z", "--others", "--exclude-standard"])
                           if p.endswith("/")]:
                excluded.append(ExcludedPath(path=nested, reason="nested git repository"))
                specs.append(":(exclude,literal)" + nested)
            g(["add", "-A", "--", "."] + specs)
            # What configured exclusions removed (files that changed but are not in the temporary index).
            if patterns:
                globs = [":(glob)" + p for p in patterns]
                changed = z(["diff", "--name-only", "-z", "--ignore-submodules=all", "--no-ext-diff",
                             "--no-textconv", self.base_commit, "--"] + globs)
                untracked = z(["ls-files", "-z", "--others", "--exclude-standard", "--"] + globs)
                for p in sorted(set(changed) | set(untracked)):
                    excluded.append(ExcludedPath(path=p, reason="configured exclusion"))
            # numstat says "-\t-" for binary files; gitlinks (nested repos, submodule moves) cannot be replayed.
            binaries = _binary_paths(z(["diff", "--cached", "--numstat", "-z", "-M", "--no-ext-diff", "--no-textconv",
                                        self.base_commit]))
            # A binary renamed or re-moded with its content unchanged replays without binary data: keep it.
            binaries -= self._unchanged_blobs(env)
            for p in sorted(binaries):
                excluded.append(ExcludedPath(path=p, reason="binary"))
            for p in self._gitlinks(env):
                if p not in binaries:
                    excluded.append(ExcludedPath(path=p, reason="nested git repository"))
                    binaries.add(p)
            final = ["--"] + [":(exclude,literal)" + p for p in sorted(binaries)]
            text = g(["diff", "--cached", *DIFF_FLAGS, self.base_commit] + final)
            files = z(["diff", "--cached", "--name-only", "-z", "-M", self.base_commit] + final)
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

        Each method runs on a host-private copy of the files the patch touches; only a method that works
        has its result written to the tree, through ``treefs`` (no symlink followed), so the tree (and its
        ``.git``) is as it was after a failed one. A patch that touches a path through a symlinked folder,
        ``..``, an absolute path or ``.git`` is refused by every method. PatchApplyError (with ``.result``)
        when no method worked, unless ``raise_on_failure`` is false.
        """
        if not patch.strip():
            raise WorkspaceError("empty patch: nothing to apply")
        data = patch.encode("utf-8", "surrogateescape")
        if not data.endswith(b"\n"):
            data += b"\n"
        names = [f"git apply", "git apply --3way", f"patch --fuzz={fuzz}"]
        touched = _patch_paths(data)
        try:
            originals = self._read_touched(touched)
        except TreePathError as exc:
            attempts = [ApplyAttempt(method=n, ok=False, output=f"refused: {exc}") for n in names]
            return self._apply_failed(attempts, raise_on_failure)
        context = self._attributes_files(touched, originals)
        attempts: list[ApplyAttempt] = []
        with self._scratch("loopcoder-apply-") as (tmp, env):
            pf = tmp / "change.patch"
            pf.write_bytes(data)
            for i, name in enumerate(names):
                if name.startswith("patch") and not shutil.which("patch"):
                    attempts.append(ApplyAttempt(method=name, ok=False, output="GNU patch is not installed"))
                    continue
                work = tmp / f"try{i}"
                _populate(work, {**context, **originals})
                if name == "git apply":
                    ok, out = self._try_git_apply(work, pf, env, three_way=False)
                elif name == "git apply --3way":
                    ok, out = self._try_git_apply(work, pf, {**env, "GIT_INDEX_FILE": str(tmp / f"index{i}")},
                                                  three_way=True)
                else:
                    ok, out = _try_gnu_patch(work, pf, fuzz)
                if ok:
                    try:
                        self._write_back(work, originals, context)
                    except (TreePathError, OSError) as exc:
                        ok, out = False, out + f"\nresult not written to the workspace: {exc}"
                attempts.append(ApplyAttempt(method=name, ok=ok, output=out))
                if ok:
                    return ApplyResult(ok=True, method=name, attempts=attempts)
        return self._apply_failed(attempts, raise_on_failure)

    # -- helpers: git ----------------------------------------------------------------------------

    def _git(self, args: list[str], env: dict[str, str] | None = None, work_tree: Path | None = None) -> str:
        try:
            return git_out(args, git_dir=self.git_dir, work_tree=work_tree or self.path, env=env)
        except HostGitError as exc:
            raise WorkspaceError(f"git {args[0]} failed in {self.path}: {redact(last_line(exc.stderr))}") from None

    @contextmanager
    def _scratch(self, prefix: str) -> Iterator[tuple[Path, dict[str, str]]]:
        """A temporary folder, with env for a temporary index and object store layered over the private one."""
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            objects = Path(tmp) / "objects"
            objects.mkdir()
            yield Path(tmp), {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_OBJECT_DIRECTORY": str(objects),
                              "GIT_ALTERNATE_OBJECT_DIRECTORIES": _quote_alt(self.git_dir / "objects")}

    def _unchanged_blobs(self, env: dict[str, str]) -> set[str]:
        """Paths (old and new) of renames and mode changes whose blob is the same on both sides."""
        parts = self._git(["diff", "--cached", "--raw", "-z", "-M", self.base_commit], env=env).split("\0")
        out: set[str] = set()
        i = 0
        while i < len(parts) - 1:
            meta = parts[i].lstrip(":").split()
            n = 2 if meta and meta[-1][:1] in ("R", "C") else 1
            paths = parts[i + 1 : i + 1 + n]
            if len(meta) >= 4 and meta[2] == meta[3] and meta[0] != _GITLINK and meta[1] != _GITLINK:
                out.update(paths)
            i += 1 + n
        return out

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
        with self._scratch("loopcoder-check-") as (tmp, env):
            tree = tmp / "tree"
            tree.mkdir()
            # Old paths of renames and deletions must exist there too: take them from the patch headers.
            wanted = sorted(set(files) | set(_patch_paths(text.encode("utf-8", "surrogateescape"))))
            existing = [p for p in self._git(["ls-tree", "-r", "-z", "--name-only", self.base_commit, "--"]
                                             + [":(literal)" + p for p in wanted]).split("\0") if p] if wanted else []
            if existing:
                self._git(["checkout", self.base_commit, "--"] + [":(literal)" + p for p in existing],
                          env=env, work_tree=tree)
            pf = tmp / "check.patch"
            pf.write_bytes(text.encode("utf-8", "surrogateescape"))
            proc = run_git(["apply", "--check", str(pf)], git_dir=self.git_dir, work_tree=tree, env=env, check=False)
            out = (proc.stderr + proc.stdout).decode("utf-8", "replace")
            return None if proc.returncode == 0 else _first_line(out)

    # -- helpers: moving the tree to a commit ------------------------------------------------------

    def _move_tree(self, sha: str, branch: str | None) -> None:
        """Make the tree's files, and its .git's HEAD, index and objects, those of ``sha`` (on ``branch``)."""
        if self.tree.kind(".git") != "dir":
            raise WorkspaceError(f"{self.path}/.git is no longer a folder (replaced from inside the sandbox?); "
                                 "not checking out into this workspace")
        old = _rev_parse(self.git_dir, "HEAD")
        try:
            if old != sha:
                self._sync_files(old, sha)
                _set_head(self.git_dir, sha)
            self._give_tree(sha, branch)
        except HostGitError as exc:
            raise WorkspaceError(f"cannot check out {sha[:12]} in {self.path}: {redact(last_line(exc.stderr))}") from None
        except (TreePathError, OSError) as exc:
            raise WorkspaceError(f"cannot check out {sha[:12]} in {self.path}: {exc}") from None

    def _sync_files(self, old: str, new: str) -> None:
        """Write the files of ``new`` that differ in the tree and delete those only ``old`` had, via treefs."""
        with self._scratch("loopcoder-checkout-") as (tmp, env):
            z = lambda args, **kw: [p for p in git_out(args, git_dir=self.git_dir, env=env, **kw).split("\0") if p]  # noqa: E731
            run_git(["read-tree", new], git_dir=self.git_dir, env=env)
            # The index has no stat data, so git compares contents: every tracked path whose file differs.
            differ = z(["diff", "--name-only", "-z", "--no-renames", "--ignore-submodules=all", "--no-ext-diff",
                        "--no-textconv"], work_tree=self.path)
            gone = z(["diff-tree", "-r", "-z", "--name-only", "--no-renames", "--diff-filter=D", old, new])
            for p in gone:
                self.tree.remove(p)
                self.tree.prune_empty_folders(p)
            if not differ:
                return
            out = tmp / "out"
            run_git(["checkout-index", "-f", "-z", "--stdin", f"--prefix={out}/"], git_dir=self.git_dir,
                    work_tree=self.path, env=env, input=b"\0".join(os.fsencode(p) for p in differ) + b"\0")
            staged = Tree(out)
            for p in differ:
                entry = staged.read(p)
                if entry is None:  # a gitlink: an empty folder is what git would leave
                    continue
                self.tree.write(p, entry, replace_folders=True)

    def _give_tree(self, sha: str, branch: str | None) -> None:
        """Write into the tree's .git (plain files, no git run on it): missing objects, HEAD, a branch, index."""
        count = git_out(["rev-list", "--count", sha, "--not", "--all"], git_dir=self.git_dir).strip()
        with self._scratch("loopcoder-give-") as (tmp, env):
            if count != "0":
                refs = git_out(["for-each-ref", "--format=%(objectname)"], git_dir=self.git_dir).split()
                name = git_out(["pack-objects", "-q", "--revs", str(tmp / "pack")], git_dir=self.git_dir,
                               input=("\n".join([sha, "--not", *refs]) + "\n").encode()).strip()
                for ext in ("pack", "idx"):  # the .idx last: git looks a pack up by its index
                    data = (tmp / f"pack-{name}.{ext}").read_bytes()
                    self.tree.write(f".git/objects/pack/pack-{name}.{ext}", Entry("file", data, 0o444))
            run_git(["update-ref", _TREE_REFS + sha, sha], git_dir=self.git_dir)
            run_git(["read-tree", sha], git_dir=self.git_dir, env=env)
            # Stat data for the files as they are now, so `git status` inside needs not re-read them all.
            run_git(["update-index", "-q", "--refresh", "--ignore-missing"], git_dir=self.git_dir,
                    work_tree=self.path, env=env, check=False)
            index = Path(env["GIT_INDEX_FILE"]).read_bytes()
        if branch:
            self.tree.write(f".git/refs/heads/{branch}", Entry("file", f"{sha}\n".encode(), 0o644))
            head = f"ref: refs/heads/{branch}\n"
        else:
            head = f"{sha}\n"
        self.tree.write(".git/index", Entry("file", index, 0o644))
        self.tree.write(".git/HEAD", Entry("file", head.encode(), 0o644))

    # -- helpers: applying -----------------------------------------------------------------------

    def _read_touched(self, touched: list[str]) -> dict[str, Entry | None]:
        return {p: self._read_patch_path(p) for p in touched}

    def _read_patch_path(self, p: str) -> Entry | None:
        """What the tree holds at a path a patch names; TreePathError for "..", absolute, .git, symlinked folders."""
        if any(part.lower() == ".git" for part in p.split("/")):
            raise TreePathError(f"path {p!r} is inside .git")
        return self.tree.read(p)

    def _attributes_files(self, touched: list[str], originals: dict) -> dict[str, Entry | None]:
        """.gitattributes of the touched paths' folders (eol and encoding rules git apply honours)."""
        out: dict[str, Entry | None] = {}
        for p in touched:
            parts = p.split("/")[:-1]
            for i in range(len(parts) + 1):
                rel = "/".join(parts[:i] + [".gitattributes"])
                if rel in out or rel in originals:
                    continue
                try:
                    entry = self.tree.read(rel)
                except TreePathError:
                    entry = None
                if entry is not None and entry.kind == "file":
                    out[rel] = entry
        return out

    def _try_git_apply(self, work: Path, pf: Path, env: dict[str, str], three_way: bool) -> tuple[bool, str]:
        args = ["apply", "--whitespace=nowarn", str(pf)]
        if three_way:
            # --3way implies --index: the index must match the files, so it is made from them.
            present = [p for p in _files_in(work)]
            if present:
                run_git(["update-index", "--add", "-z", "--stdin"], git_dir=self.git_dir, work_tree=work, env=env,
                        input=b"\0".join(os.fsencode(p) for p in present) + b"\0")
            args.insert(1, "--3way")
        proc = run_git(args, git_dir=self.git_dir, work_tree=work, env=env, check=False)
        out = (proc.stderr + proc.stdout).decode("utf-8", "replace")
        ok = proc.returncode == 0
        if ok and three_way:
            unmerged = run_git(["ls-files", "-u", "-z"], git_dir=self.git_dir, work_tree=work, env=env).stdout
            ok = not unmerged.strip(b"\0")
        return ok, out

    def _write_back(self, work: Path, originals: dict[str, Entry | None], context: dict[str, Entry | None]) -> None:
        """Copy what a method changed in ``work`` into the tree; on error, put back what was written."""
        staged = Tree(work)
        result = {p: staged.read(p) for p in _files_in(work)}
        changes: dict[str, Entry | None] = {}
        for p, entry in result.items():
            before = originals[p] if p in originals else context.get(p)
            if entry != before:
                changes[p] = entry
        for p in originals:
            if p not in result and originals[p] is not None:
                changes[p] = None
        done: list[str] = []
        try:
            for p in sorted(changes, key=lambda p: changes[p] is not None):  # deletions first: a file may become a folder
                if p not in originals and p not in context:
                    originals[p] = self._read_patch_path(p)  # a path the headers did not name
                entry = changes[p]
                done.append(p)
                if entry is None:
                    self.tree.remove(p)
                    self.tree.prune_empty_folders(p)
                else:
                    self.tree.write(p, entry)
        except BaseException:
            for p in reversed(done):
                try:
                    before = originals.get(p, context.get(p))
                    if before is None:
                        self.tree.remove(p)
                        self.tree.prune_empty_folders(p)
                    else:
                        self.tree.write(p, before)
                except (TreePathError, OSError):
                    pass
            raise

    @staticmethod
    def _apply_failed(attempts: list[ApplyAttempt], raise_on_failure: bool) -> ApplyResult:
        result = ApplyResult(ok=False, method=None, attempts=attempts)
        if raise_on_failure:
            err = PatchApplyError(f"patch does not apply ({result.summary()})")
            err.result = result
            raise err
        return result


def _private_dir_for(tree: Path, config: WorkspaceConfig) -> Path:
    git_dir = private_git_dir(tree, config.private_git_root)
    if git_dir == tree or tree in git_dir.parents:
        raise WorkspaceError(f"private git directory {git_dir} would be inside the workspace {tree}; "
                             "set workspace.private_git_root outside it")
    return git_dir


def _make_private_repo(source: str, git_dir: Path, env: dict[str, str] | None = None) -> None:
    """``git clone --bare`` of ``source`` into ``git_dir`` (mode 0700, objects copied, no hooks or templates)."""
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = git_dir.with_name(f"{git_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        run_git(["clone", "-q", "--bare", "--no-hardlinks", "--template=", "--", source, str(tmp)], git_dir=None,
                env=env)
        os.chmod(tmp, 0o700)
        os.rename(tmp, git_dir)
    finally:
        if tmp.exists():
            remove_tree(tmp)


def _rev_parse(git_dir: Path, rev: str, where: str | None = None) -> str:
    proc = run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"], git_dir=git_dir,
                   check=False)
    if proc.returncode != 0:
        raise WorkspaceError(f"no commit {rev!r} in {where or git_dir}")
    return proc.stdout.decode().strip()


def _resolve_or_fetch(git_dir: Path, commit: str, where: str | None = None,
                      env: dict[str, str] | None = None) -> str:
    """The sha of ``commit`` in the private repository, fetched from its origin when missing."""
    try:
        return _rev_parse(git_dir, commit, where)
    except WorkspaceError:
        pass
    origin = run_git(["config", "--get", "remote.origin.url"], git_dir=git_dir, check=False).stdout.decode(
        "utf-8", "surrogateescape").strip()
    if commit.startswith("-") or not origin:
        raise WorkspaceError(f"commit {commit} not found in {where or git_dir} and it has no origin to fetch from")
    try:
        run_git(["fetch", "-q", "--no-tags", "origin", commit], git_dir=git_dir, env=env)
    except HostGitError as exc:
        raise WorkspaceError(f"commit {commit} not found in {where or git_dir} nor in origin: "
                             f"{redact(last_line(exc.stderr), origin)}") from None
    return _rev_parse(git_dir, "FETCH_HEAD", where)


def _set_head(git_dir: Path, sha: str) -> None:
    run_git(["update-ref", "--no-deref", "HEAD", sha], git_dir=git_dir)


def _quote_alt(path: Path) -> str:
    s = str(path)
    if ":" in s or s.startswith('"'):  # the variable is colon-separated; git reads C-quoted entries
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def _populate(work: Path, entries: dict[str, Entry | None]) -> None:
    """A host-private copy of the given files (ours alone, so plain file calls are fine here)."""
    work.mkdir()
    for rel, entry in entries.items():
        if entry is None:
            continue
        dest = work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "link":
            os.symlink(entry.data, dest)
        else:
            dest.write_bytes(entry.data)
            os.chmod(dest, entry.mode & 0o7777)


def _files_in(work: Path) -> list[str]:
    """Files and symlinks under ``work`` (relative paths), no link followed."""
    out = []
    for root, dirs, files in os.walk(work, followlinks=False):
        rel_root = os.path.relpath(root, work)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            out.append(name if rel_root == "." else f"{rel_root}/{name}")
    return sorted(out)


def _try_gnu_patch(work: Path, pf: Path, fuzz: int) -> tuple[bool, str]:
    # In a private copy of the touched files: whatever patch writes (an ed-style script included) lands
    # there, and only files under the copy are written back. No backups or reject files.
    cmd = ["patch", "-p1", f"--fuzz={fuzz}", "--batch", "--forward", "--no-backup-if-mismatch",
           "--reject-file=-", "-i", str(pf)]
    proc = subprocess.run(cmd, cwd=work, env=dict(os.environ, LC_ALL="C"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace")
    return proc.returncode == 0, proc.stdout


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


_HEADER = re.compile(rb"^(diff --git |--- |\+\+\+ |rename from |rename to |copy from |copy to )(.*)$")
_HUNK = re.compile(rb"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def _patch_paths(data: bytes) -> list[str]:
    """Repository paths a patch reads or writes, from its diff --git, ---/+++ and rename/copy headers.

    Hunk bodies are skipped by their line counts, so a removed line that starts with "-- " is not a header.
    """
    out: list[str] = []

    def add(p: bytes, strip_prefix: bool) -> None:
        if p.startswith(b'"'):
            p = _unquote_c(p)
        if strip_prefix and p[:2] in (b"a/", b"b/"):
            p = p[2:]
        name = p.decode("utf-8", "surrogateescape")
        if name and p != b"/dev/null" and name not in out:
            out.append(name)

    old = new = 0
    for line in data.split(b"\n"):
        if old > 0 or new > 0:  # inside a hunk
            tag = line[:1]
            if tag in (b" ", b""):
                old, new = old - 1, new - 1
                continue
            if tag == b"-":
                old -= 1
                continue
            if tag == b"+":
                new -= 1
                continue
            if tag == b"\\":
                continue
            old = new = 0  # the hunk ended early (malformed): read this line as a header
        hunk = _HUNK.match(line)
        if hunk:
            old = int(hunk.group(1)) if hunk.group(1) is not None else 1
            new = int(hunk.group(2)) if hunk.group(2) is not None else 1
            continue
        m = _HEADER.match(line)
        if not m:
            continue
        kind, rest = m.group(1), m.group(2)
        if kind == b"diff --git ":
            for p in _git_header_paths(rest):
                add(p, True)
        elif kind in (b"--- ", b"+++ "):
            quoted = rest.startswith(b'"')
            add(rest[: _quoted_end(rest) + 1] if quoted else rest.split(b"\t")[0].rstrip(b"\r"), True)
        else:
            add(rest.rstrip(b"\r"), False)
    return out


def _git_header_paths(rest: bytes) -> list[bytes]:
    """Both paths of ``diff --git a/X b/Y`` when they can be told apart (quoted, or X == Y)."""
    if rest.startswith(b'"'):
        end = _quoted_end(rest)
        first, second = rest[: end + 1], rest[end + 1 :].lstrip(b" ")
        return [first, second]
    if rest.endswith(b'"') and b' "' in rest:
        i = rest.index(b' "')
        return [rest[:i], rest[i + 1 :]]
    half = (len(rest) - 1) // 2
    a, b = rest[:half], rest[half + 1 :]
    if len(rest) % 2 == 1 and rest[half : half + 1] == b" " and a[:2] == b"a/" and b[:2] == b"b/" and a[2:] == b[2:]:
        return [a]
    return []


def _quoted_end(s: bytes) -> int:
    """Index of the quote that closes the C-quoted string starting at s[0]."""
    i = 1
    while i < len(s):
        if s[i : i + 1] == b"\\":
            i += 2
            continue
        if s[i : i + 1] == b'"':
            return i
        i += 1
    return len(s) - 1


def _unquote_c(p: bytes) -> bytes:
    """git's C-style quoted path ("a/\\303\\251.txt") back to bytes."""
    inner = p[1:-1] if p.endswith(b'"') else p[1:]
    return inner.decode("unicode_escape").encode("latin-1")
