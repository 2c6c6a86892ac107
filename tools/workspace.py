"""The workspace the tools may touch: path confinement, file listing, guarded reads and writes.

Every path a model gives goes through ``Workspace.resolve``: it is taken relative to the workspace root,
symlinks are resolved, and anything that lands outside the root is refused with a ``ToolError``. Reads
and writes then open the resolved path without following symlinks (the sandbox can change the tree
between a resolve and the write) and only for regular files (a FIFO would block the host for good).
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Folders that are never source worth reading: VCS data, caches, virtualenvs, dependency trees.
SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".nox", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".eggs", ".idea", ".vscode", "target", ".gradle", "vendor-cache",
})
BINARY_SNIFF_BYTES = 8192
NOT_FOLLOWED = "it is a symlink (changed after the path was checked?); not followed"


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
        if raw == "/testbed" or raw.startswith("/testbed/"):
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
        with self.open_file(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > self.max_file_bytes:
                raise ToolError(
                    f"{self.rel(path)} is too large to show whole ({size:,} bytes, limit "
                    f"{self.max_file_bytes:,}); view a line range or search it instead")
            data = fh.read()
        if is_binary(data):
            raise ToolError(f"{self.rel(path)} is a binary file ({size:,} bytes); not shown")
        return data.decode("utf-8", "replace")

    def open_file(self, path: Path) -> BinaryIO:
        """``path`` (a ``resolve`` result) opened for reading; a ToolError unless it is a regular file.

        Opened as writes are (no symlink followed anywhere below the root) and without blocking, so a
        FIFO or device the sandbox put there is refused instead of hanging the host.
        """
        try:
            parent, name = self._open_parent(path, create=False)
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
            finally:
                os.close(parent)
        except FileNotFoundError:
            raise ToolError(f"no such file or directory: {self.rel(path)}") from None
        except OSError as exc:
            raise ToolError(f"cannot open {self.rel(path)}: {_why(exc)}") from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise ToolError(f"{self.rel(path)} is not a regular file ({_kind(mode)}); it cannot be read")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    # -- writes --------------------------------------------------------------------------------------
    # Folders are opened one by one from the root with O_NOFOLLOW: a folder the sandbox replaced with a
    # symlink after resolve() is refused, never followed (this process may be root). New files and
    # folders get the workspace root's owner, so the sandbox user can change them later.

    def write_file(self, path: Path, data: bytes) -> bool:
        """Write ``data`` to ``path`` (a ``resolve`` result), creating missing folders; True if it was new.

        The (whole-second mtime, size) pair always changes: Python's .pyc files (and make) trust it, so a
        same-size edit within the second of the last compile would otherwise run the old code.
        """
        owner = self._new_owner()
        parent, name = self._open_parent(path, create=True, owner=owner)
        try:
            flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            created = False
            try:
                try:
                    fd = os.open(name, flags, dir_fd=parent)
                except FileNotFoundError:
                    fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=parent)
                    created = True
            except OSError as exc:
                raise ToolError(f"cannot write {self.rel(path)}: {_why(exc)}") from None
            try:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    raise ToolError(f"cannot write {self.rel(path)}: not a regular file ({_kind(before.st_mode)})")
                if created and owner:
                    os.fchown(fd, *owner)
                os.set_blocking(fd, True)
                os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                after = os.fstat(fd)
                if not created and after.st_size == before.st_size and int(after.st_mtime) == int(before.st_mtime):
                    os.utime(fd, ns=(after.st_atime_ns, (int(before.st_mtime) + 1) * 1_000_000_000))
            finally:
                os.close(fd)
        finally:
            os.close(parent)
        return created

    def remove_file(self, path: Path) -> None:
        """Delete the file (or symlink) at ``path``, a ``resolve`` result; nothing happens if it is gone."""
        try:
            parent, name = self._open_parent(path, create=False)
        except FileNotFoundError:
            return
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise ToolError(f"{self.rel(path)} is a directory; not removed")
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        finally:
            os.close(parent)

    def _new_owner(self) -> tuple[int, int] | None:
        """uid, gid for new files: the root's owner when we are root and it is someone else, else None."""
        if os.geteuid() != 0:
            return None
        st = os.stat(self.root)
        return (st.st_uid, st.st_gid) if (st.st_uid, st.st_gid) != (0, 0) else None

    def _open_parent(self, path: Path, create: bool, owner: tuple[int, int] | None = None) -> tuple[int, str]:
        """An open fd of ``path``'s folder, reached without following symlinks, and ``path``'s name in it.

        ``create``: make missing folders (given to ``owner``); otherwise a missing one is FileNotFoundError.
        """
        parts = Path(os.path.relpath(path, self.root)).parts
        if not parts or parts[0] == os.pardir:
            raise ToolError(f"{path} is not a file inside the workspace")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, name in enumerate(parts[:-1]):
                try:
                    sub = _enter(fd, name, create, owner)
                except FileNotFoundError:
                    if not create:
                        raise
                    raise ToolError(f"cannot use {'/'.join(parts[:i + 1])} as a folder: it vanished") from None
                except OSError as exc:
                    why = _why(exc)
                    try:  # O_DIRECTORY|O_NOFOLLOW answers ENOTDIR for a symlink too: say which it is
                        if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                            why = NOT_FOLLOWED
                    except OSError:
                        pass
                    raise ToolError(f"cannot use {'/'.join(parts[:i + 1])} as a folder: {why}") from None
                os.close(fd)
                fd = sub
            return fd, parts[-1]
        except BaseException:
            os.close(fd)
            raise


def _enter(fd: int, name: str, create: bool, owner: tuple[int, int] | None) -> int:
    """fd of the folder ``name`` in the folder ``fd`` (never through a symlink), made when missing and ``create``."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o777, dir_fd=fd)
    except FileExistsError:
        owner = None  # made meanwhile by someone else: not ours to give away
    sub = os.open(name, flags, dir_fd=fd)
    try:
        if owner:
            os.fchown(sub, *owner)
    except BaseException:
        os.close(sub)
        raise
    return sub


def is_binary(data: bytes) -> bool:
    """True when the first 8 KiB hold a NUL byte (the heuristic git and ripgrep use)."""
    return b"\x00" in data[:BINARY_SNIFF_BYTES]


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _why(exc: OSError) -> str:
    """One phrase for an OSError met while walking or opening a workspace path."""
    if exc.errno == errno.ELOOP:
        return NOT_FOLLOWED
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder"
    if exc.errno == errno.ENXIO:
        return "not a regular file (a FIFO or socket)"
    return exc.strerror or str(exc)
