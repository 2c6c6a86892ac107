"""File operations on a sandbox-writable tree that never follow a symlink.

The sandbox can turn any folder of its tree into a symlink to a host path (``a -> /root``) at any moment, so
``tree / "a/b"`` opened the ordinary way may land outside. Here every path is walked one component at a time
from a descriptor of the tree root with ``O_NOFOLLOW | O_DIRECTORY`` and the leaf is used through that
folder's descriptor (``*at`` calls): a symlinked folder, ``..`` or an absolute path is refused
(``TreePathError``), and a leaf symlink is read or replaced as a link, never followed.
"""
from __future__ import annotations

import errno
import os
import stat
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from loopcoder.runtime.errors import WorkspaceError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreePathError(WorkspaceError):
    """A path in a workspace tree goes through a symlink, leaves the tree, or needs a folder that is a file."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path  # the offending component, when there is one


@dataclass(frozen=True)
class Entry:
    """What a path holds: a regular file (bytes, permission bits) or a symlink (its target as bytes)."""

    kind: Literal["file", "link"]
    data: bytes
    mode: int = 0o644


def split(rel: str) -> list[str]:
    """Components of a tree-relative path; TreePathError for absolute, empty, ``.``/``..`` or NUL paths."""
    if not rel or "\0" in rel or rel.startswith("/"):
        raise TreePathError(f"path {rel!r} is not a relative path inside the workspace")
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise TreePathError(f"path {rel!r} leaves the workspace or is not normalised")
    return parts


class Tree:
    """A folder whose contents are untrusted; all access goes through descriptors, no symlink followed."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- walking ---------------------------------------------------------------------------------

    @contextmanager
    def parent(self, rel: str, create: bool = False, replace: bool = False) -> Iterator[tuple[int, str]]:
        """(descriptor of the folder holding ``rel``, leaf name); folders made when ``create``.

        FileNotFoundError when a folder is missing and not ``create``; TreePathError for a symlinked folder,
        unless ``replace``: then that symlink (or file) itself is deleted and a folder made in its place.
        """
        parts = split(rel)
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for i, name in enumerate(parts[:-1]):
                nfd = self._step(fd, name, "/".join(parts[: i + 1]), create, replace)
                os.close(fd)
                fd = nfd
            yield fd, parts[-1]
        finally:
            os.close(fd)

    @staticmethod
    def _step(fd: int, name: str, shown: str, create: bool, replace: bool) -> int:
        """Descriptor of folder ``name`` inside ``fd`` (``fd`` stays open)."""
        for attempt in range(3):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create or attempt == 2:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                    _match_owner(fd, name)
                except FileExistsError:
                    pass  # made meanwhile; the next open checks what it is
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                if not (replace and create) or attempt == 2:
                    raise TreePathError(f"{shown!r} in the workspace is a symlink or a file, not a folder; "
                                        "refusing to go through it", shown) from None
                os.unlink(name, dir_fd=fd)  # the link itself, never what it points to
        raise TreePathError(f"{shown!r} in the workspace keeps changing; giving up", shown)

    def symlinked_folder(self, rel: str) -> str | None:
        """The first folder on the way to ``rel`` that is a symlink (or a file), else None."""
        try:
            with self.parent(rel):
                return None
        except FileNotFoundError:
            return None
        except TreePathError as exc:
            return exc.path

    # -- reading and writing leaves ----------------------------------------------------------------

    def read(self, rel: str) -> Entry | None:
        """The file or symlink at ``rel``; None when nothing (or a folder/special file) is there."""
        try:
            with self.parent(rel) as (fd, leaf):
                try:
                    st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return None
                if stat.S_ISLNK(st.st_mode):
                    return Entry("link", os.fsencode(os.readlink(leaf, dir_fd=fd)))
                if not stat.S_ISREG(st.st_mode):
                    return None
                ffd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
                try:
                    fst = os.fstat(ffd)
                    if not stat.S_ISREG(fst.st_mode):
                        return None
                    with os.fdopen(ffd, "rb", closefd=False) as f:
                        data = f.read()
                finally:
                    os.close(ffd)
                return Entry("file", data, stat.S_IMODE(fst.st_mode))
        except FileNotFoundError:
            return None

    def kind(self, rel: str) -> str | None:
        """"file", "link", "dir", "other" or None (missing), without following anything."""
        try:
            with self.parent(rel) as (fd, leaf):
                st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        m = st.st_mode
        return ("file" if stat.S_ISREG(m) else "link" if stat.S_ISLNK(m) else "dir" if stat.S_ISDIR(m)
                else "other")

    def write(self, rel: str, entry: Entry, replace_folders: bool = False) -> None:
        """Make ``rel`` hold ``entry`` (folders created); whatever file or link was there is replaced atomically.

        A folder at ``rel`` is a TreePathError, and so is a symlink or file where a folder on the way should
        be unless ``replace_folders`` (a checkout: that entry is deleted and a folder made). New files, links
        and folders get the owner of their folder.
        """
        with self.parent(rel, create=True, replace=replace_folders) as (fd, leaf):
            tmp = f".loopcoder-tmp-{uuid.uuid4().hex[:12]}"
            if entry.kind == "link":
                os.symlink(entry.data, tmp, dir_fd=fd)
            else:
                ffd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=fd)
                try:
                    with os.fdopen(ffd, "wb", closefd=False) as f:
                        f.write(entry.data)
                    os.fchmod(ffd, entry.mode & 0o7777)
                finally:
                    os.close(ffd)
            try:
                _match_owner(fd, tmp)
                os.rename(tmp, leaf, src_dir_fd=fd, dst_dir_fd=fd)
            except OSError as exc:
                try:
                    os.unlink(tmp, dir_fd=fd)
                except OSError:
                    pass
                if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise TreePathError(f"{rel!r} in the workspace is a folder; cannot write a file there") from None
                raise

    def remove(self, rel: str) -> None:
        """Delete the file or symlink at ``rel`` (the link itself); nothing there is fine, a folder is kept.

        A symlinked folder on the way means the path is not in the tree: nothing is deleted.
        """
        try:
            with self.parent(rel) as (fd, leaf):
                try:
                    st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(leaf, dir_fd=fd)
        except (FileNotFoundError, TreePathError):
            return

    def prune_empty_folders(self, rel: str) -> None:
        """Remove the folders above ``rel`` that are empty, bottom up (the root is kept)."""
        parts = split(rel)[:-1]
        while parts:
            try:
                with self.parent("/".join(parts)) as (fd, leaf):
                    os.rmdir(leaf, dir_fd=fd)
            except (FileNotFoundError, TreePathError):
                return
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    return
                raise
            parts.pop()


def _match_owner(dir_fd: int, name: str) -> None:
    """Give a new entry the owner of its folder when we are root (the sandbox user must keep write access)."""
    if os.geteuid() != 0:
        return
    st = os.fstat(dir_fd)
    if st.st_uid != 0 or st.st_gid != 0:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)
