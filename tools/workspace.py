"""The workspace the tools may touch: path confinement, file listing, and guarded reads.

Every path a model gives goes through ``Workspace.resolve``: it is taken relative to the workspace root,
symlinks are resolved, and anything that lands outside the root is refused with a ``ToolError``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Folders that are never source worth reading: VCS data, caches, virtualenvs, dependency trees.
SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".nox", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".eggs", ".idea", ".vscode", "target", ".gradle", "vendor-cache",
})
BINARY_SNIFF_BYTES = 8192


class ToolError(Exception):
    """A tool call that cannot be done; the message is shown to the model as the tool's result."""


@dataclass(frozen=True)
class FileInfo:
    rel: str
    size: int
    mtime_ns: int


class Workspace:
    """A directory tree the tools work in (the host path of the sandbox's /testbed)."""

    def __init__(self, root: str | Path, max_file_bytes: int = 1_000_000):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ToolError(f"workspace {root} is not a directory")
        self.max_file_bytes = max_file_bytes

    def resolve(self, path: str | Path, must_exist: bool = True) -> Path:
        """Absolute, symlink-resolved path of ``path`` inside the workspace; a ToolError otherwise."""
        raw = str(path).strip()
        if not raw:
            raise ToolError("path is empty")
        if "\x00" in raw:
            raise ToolError("path contains a NUL byte")
        p = Path(raw)
        if p.is_absolute() and raw.startswith("/testbed"):
            # The model sees the sandbox's mount point; map it onto the host workspace.
            p = self.root / os.path.relpath(raw, "/testbed")
        candidate = p if p.is_absolute() else self.root / p
        real = Path(os.path.realpath(candidate))
        if real != self.root and self.root not in real.parents:
            raise ToolError(f"path {raw!r} is outside the workspace ({self.root}); use a path relative to it")
        if must_exist and not real.exists():
            raise ToolError(f"no such file or directory: {self.rel(real)}")
        return real

    def rel(self, path: Path) -> str:
        """Workspace-relative POSIX path of an absolute path inside it (``.`` for the root)."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def list_files(self) -> list[FileInfo]:
        """Every regular, non-hidden file the tools consider, sorted; honours .gitignore in a git checkout."""
        rels = self._git_files() if (self.root / ".git").exists() else None
        out: list[FileInfo] = []
        if rels is not None:
            for rel in rels:
                if any(part.startswith(".") or part in SKIP_DIRS for part in rel.split("/")):
                    continue
                try:
                    st = os.stat(self.root / rel, follow_symlinks=False)
                except OSError:
                    continue  # deleted but still in the index
                if _is_regular(st.st_mode):
                    out.append(FileInfo(rel, st.st_size, st.st_mtime_ns))
        else:
            self._walk(str(self.root), "", out)
        out.sort(key=lambda f: f.rel)
        return out

    def _walk(self, directory: str, prefix: str, out: list[FileInfo]) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in SKIP_DIRS:
                continue
            rel = prefix + name
            if entry.is_dir(follow_symlinks=False):
                self._walk(entry.path, rel + "/", out)
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                out.append(FileInfo(rel, st.st_size, st.st_mtime_ns))

    def _git_files(self) -> list[str] | None:
        # Never `git -C root`: root/.git is writable from the sandbox (its config can run commands on the
        # host). hostgit lists the tree against an empty private repository, .gitignore files honoured.
        from loopcoder.runtime.hostgit import HostGitError, list_worktree_files

        try:
            return list_worktree_files(self.root, timeout=60)
        except HostGitError:
            return None

    def read_text(self, path: Path, what: str = "file") -> str:
        """Text of a workspace file; binary and huge files are refused with a one-line summary."""
        if path.is_dir():
            raise ToolError(f"{self.rel(path)} is a directory, not a {what}")
        size = path.stat().st_size
        if size > self.max_file_bytes:
            raise ToolError(
                f"{self.rel(path)} is too large to show whole ({size:,} bytes, limit {self.max_file_bytes:,}); "
                "view a line range or search it instead")
        data = path.read_bytes()
        if is_binary(data):
            raise ToolError(f"{self.rel(path)} is a binary file ({size:,} bytes); not shown")
        return data.decode("utf-8", "replace")


def is_binary(data: bytes) -> bool:
    """True when the first 8 KiB hold a NUL byte (the heuristic git and ripgrep use)."""
    return b"\x00" in data[:BINARY_SNIFF_BYTES]


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)
