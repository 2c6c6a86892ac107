"""Tar streams between the host and a sandbox: packing a host tree, and unpacking an archive a sandbox made.

Both sides work on directory file descriptors (``openat`` with ``O_NOFOLLOW`` for every component), so
no path is ever resolved through a symlink on the host, whatever changes under us.

``pack`` reads a host file or folder: symlinks become link entries (never followed), hardlinks inside the
tree stay hardlinks, devices, fifos and sockets are refused, modes keep their permission bits only.

``unpack`` writes an archive whose every byte may come from untrusted code. Entry names must lie under
one expected top name (absolute names, ``..``, empty names are a ``CopyError``); every entry is created
relative to its parent's descriptor, so nothing can be written through a symlink; links may not leave
the copy (checked lexically when created, and again against the finished tree, because a later link
can change where an earlier one points); hardlinks may only name regular files of the copy; devices and
fifos are never created; setuid, setgid, sticky and group/other write bits are dropped; the host never
chowns to the archive's owners. Total file bytes and the entry count are capped.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from loopcoder.runtime.errors import CopyError
from loopcoder.runtime.sandbox import CopyResult, SkippedEntry

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of file data per copy_out
DEFAULT_MAX_ENTRIES = 100_000
MAX_LINK_HOPS = 40  # like the kernel's limit on symlinks in one lookup
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_SPECIAL = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}


def shown(name: str) -> str:
    """A file name for messages: bytes that are not UTF-8 as \\xNN, never a lone surrogate."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


# -- packing (host -> archive) ---------------------------------------------------------------------


def pack(
    out: BinaryIO,
    parent_fd: int,
    name: str,
    arcname: str,
    *,
    owner: tuple[int, int] = (0, 0),
    lead_dirs: tuple[str, ...] = (),
    max_bytes: int | None = None,
    max_entries: int | None = None,
    skip_special: bool = False,
) -> CopyResult:
    """Write a tar of ``name`` (in the folder ``parent_fd``) to ``out`` as ``arcname``.

    ``lead_dirs`` are folder entries written first (mode 0755), e.g. missing parents of the destination.
    Every entry is owned by ``owner``. Raises ``CopyError`` on a device, fifo or socket (listed in
    ``skipped`` instead with ``skip_special``), when a file changes type while it is read, or past
    ``max_bytes``/``max_entries``.
    """
    p = _Packer(out, owner, max_bytes, max_entries, skip_special, arcname)
    try:
        for d in lead_dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, (info.uid, info.gid), info.mtime = tarfile.DIRTYPE, 0o755, owner, int(time.time())
            p.add(info)
        # Depth-first without recursion: a stack of (folder fd, names left, archive prefix).
        stack: list[tuple[int, list[str], str]] = []
        try:
            first = p.entry(parent_fd, name, arcname)
            if first is not None:
                stack.append((first, sorted(os.listdir(first), reverse=True), arcname))
            while stack:
                fd, names, prefix = stack[-1]
                if not names:
                    os.close(fd)
                    stack.pop()
                    continue
                child = names.pop()
                sub = p.entry(fd, child, f"{prefix}/{child}")
                if sub is not None:
                    stack.append((sub, sorted(os.listdir(sub), reverse=True), f"{prefix}/{child}"))
        finally:
            for fd, _, _ in stack:
                os.close(fd)
    finally:
        p.tar.close()
    return p.result


class _Packer:
    def __init__(self, out: BinaryIO, owner: tuple[int, int], max_bytes: int | None, max_entries: int | None,
                 skip_special: bool, top: str):
        # GNU format: names travel as their raw bytes (surrogateescape), long names as GNU long-name blocks.
        self.tar = tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                                errors="surrogateescape")
        self.owner, self.max_bytes, self.max_entries = owner, max_bytes, max_entries
        self.skip_special, self.top = skip_special, top
        self.seen: dict[tuple[int, int], str] = {}  # (dev, inode) of files with several links -> first name
        self.result = CopyResult()
        self.entries = 0

    def add(self, info: tarfile.TarInfo, f: BinaryIO | None = None) -> None:
        self.entries += 1
        if self.max_entries is not None and self.entries > self.max_entries:
            raise CopyError(f"the copy has more than {self.max_entries} entries (max_entries)")
        if self.max_bytes is not None and self.result.bytes + info.size > self.max_bytes:
            raise CopyError(f"the copy holds more than {self.max_bytes} bytes of file data (max_bytes) at "
                            f"{shown(info.name)}")
        try:
            self.tar.addfile(info, f)
        except OSError as exc:  # tarfile: the file shrank while it was read
            raise CopyError(f"cannot copy {shown(info.name)}: {exc}") from None
        if info.isdir():
            self.result.dirs += 1
        elif info.islnk():
            self.result.hardlinks += 1
        elif info.issym():
            self.result.symlinks += 1
        else:
            self.result.files += 1
            self.result.bytes += info.size

    def entry(self, parent_fd: int, name: str, arcname: str) -> int | None:
        """Add one entry; returns an open fd when it is a folder whose children come next."""
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except OSError as exc:
            raise CopyError(f"cannot read {shown(arcname)}: {exc.strerror}") from None
        info = tarfile.TarInfo(arcname)
        info.mtime, info.mode, (info.uid, info.gid) = int(st.st_mtime), stat.S_IMODE(st.st_mode) & 0o777, self.owner
        if stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=parent_fd)
            self.add(info)
            return None
        if stat.S_ISREG(st.st_mode):
            # O_NONBLOCK: a file swapped for a fifo after the stat must not hang the open.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent_fd)
            with os.fdopen(fd, "rb") as f:
                fst = os.fstat(fd)
                if not stat.S_ISREG(fst.st_mode):
                    raise CopyError(f"{shown(arcname)} changed while it was copied")
                key = (fst.st_dev, fst.st_ino)
                if fst.st_nlink > 1 and key in self.seen:  # a second name of a file already in the copy
                    info.type, info.linkname = tarfile.LNKTYPE, self.seen[key]
                    self.add(info)
                    return None
                if fst.st_nlink > 1:
                    self.seen[key] = arcname
                info.size = fst.st_size
                self.add(info, f)
            return None
        if stat.S_ISDIR(st.st_mode):
            try:
                fd = os.open(name, _DIR, dir_fd=parent_fd)
            except OSError as exc:
                raise CopyError(f"cannot open folder {shown(arcname)}: {exc.strerror}") from None
            info.type = tarfile.DIRTYPE
            try:
                self.add(info)
            except BaseException:
                os.close(fd)
                raise
            return fd
        kind = "fifo" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode) else "device file"
        if self.skip_special:
            rel = arcname[len(self.top) + 1:] or "."
            self.result.skipped.append(SkippedEntry(path=shown(rel), reason=f"{kind} not copied"))
            return None
        raise CopyError(f"{shown(arcname)} is a {kind}; only files, folders and symlinks can be copied")


def open_folder(path: str | Path, parts: tuple[str, ...] = ()) -> int:
    """fd of the folder ``path``/``parts``: ``path`` (the caller's) resolved, ``parts`` never through a symlink."""
    fd = os.open(os.path.realpath(path), _DIR)
    for comp in parts:
        try:
            nfd = os.open(comp, _DIR, dir_fd=fd)
        except FileNotFoundError:
            raise CopyError(f"no such file or folder: {shown('/'.join(parts))}") from None
        except OSError as exc:
            raise CopyError(f"{shown('/'.join(parts))}: {shown(comp)!r} is not a folder ({exc.strerror}; "
                            "symlinks are never followed here)") from None
        finally:
            os.close(fd)
        fd = nfd
    return fd


def pack_path(out: BinaryIO, host_path: str | Path, arcname: str, **kw) -> CopyResult:
    """``pack`` for a host path given by the caller: its folders are resolved, its last component is not."""
    path = Path(os.path.abspath(host_path))
    if not os.path.lexists(path):
        raise CopyError(f"no such file or folder on the host: {path}")
    if path.parent == path:
        raise CopyError("cannot copy the root folder /")
    parent_fd = os.open(os.path.realpath(path.parent), _DIR)
    try:
        return pack(out, parent_fd, path.name, arcname, **kw)
    finally:
        os.close(parent_fd)


# -- unpacking (archive -> host) -------------------------------------------------------------------


class _Unpacker:
    def __init__(self, root_fd: int, top: str, dest: tuple[str, ...], max_bytes: int | None,
                 max_entries: int | None, confine: bool) -> None:
        self.root_fd, self.top, self.dest = root_fd, top, dest
        self.max_bytes, self.max_entries, self.confine = max_bytes, max_entries, confine
        self.result = CopyResult()
        self.entries = 0
        self.dirs: list[tuple[tuple[str, ...], int, int | None]] = []  # parts, mode, mtime: set at the end
        self.links: list[tuple[str, ...]] = []
        self._cached: tuple[tuple[str, ...], int] | None = None  # last parent folder opened

    # paths

    def parts(self, name: str, what: str = "entry") -> tuple[str, ...]:
        if "\0" in name:
            raise CopyError(f"archive {what} {shown(name)!r} holds a NUL byte")
        if name.startswith("/"):
            raise CopyError(f"archive {what} {shown(name)!r} is an absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise CopyError(f"archive {what} {shown(name)!r} contains '..'")
        if not parts or parts[0] != self.top:
            raise CopyError(f"archive {what} {shown(name)!r} is not under {shown(self.top)!r}")
        return (*self.dest, *parts[1:])

    def rel(self, parts: tuple[str, ...]) -> str:
        """``parts`` relative to the copy's root, for messages."""
        return shown("/".join(parts[len(self.dest):]) or ".")

    def open_dir(self, parts: tuple[str, ...], create: bool) -> int | None:
        """fd of the folder ``parts`` under the root, never through a symlink; missing folders are created
        (mode 0755) when ``create``, else None is returned, as for anything that is not a folder."""
        if self._cached and self._cached[0] == parts:
            return os.dup(self._cached[1])
        fd = os.dup(self.root_fd)
        for i, comp in enumerate(parts):
            try:
                try:
                    nfd = os.open(comp, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(comp, 0o700, dir_fd=fd)
                    nfd = os.open(comp, _DIR, dir_fd=fd)
                    self.dirs.append((parts[: i + 1], 0o755, None))
            except OSError as exc:
                os.close(fd)
                if not create:
                    return None
                raise CopyError(f"cannot create {self.rel(parts)}: {shown(comp)!r} is not a folder "
                                f"({exc.strerror}; symlinks are never followed)") from None
            os.close(fd)
            fd = nfd
        self._forget()
        self._cached = (parts, os.dup(fd))
        return fd

    def _forget(self) -> None:
        if self._cached:
            os.close(self._cached[1])
            self._cached = None

    def clear(self, parent_fd: int, name: str, keep_dir: bool = False) -> bool:
        """Remove whatever is at ``name`` (a folder recursively, without following links); True if a folder
        was kept."""
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self._forget()  # the cached folder may be inside what goes
            shutil.rmtree(name, dir_fd=parent_fd)
        else:
            os.unlink(name, dir_fd=parent_fd)
        return False

    # entries

    def skip(self, parts: tuple[str, ...], reason: str) -> None:
        self.result.skipped.append(SkippedEntry(path=self.rel(parts), reason=reason))

    def add(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.max_entries is not None and self.entries > self.max_entries:
            raise CopyError(f"the copy has more than {self.max_entries} entries (max_entries); nothing was kept")
        parts = self.parts(m.name)
        if m.type in _SPECIAL or not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            self.skip(parts, f"{_SPECIAL.get(m.type, 'unsupported entry type')} not copied")
            return
        if len(parts) == len(self.dest) and not (m.isdir() or m.isreg()) and self.confine:
            self.skip(parts, "the copied path itself is a link")
            return
        parent = self.open_dir(parts[:-1], create=True)
        name = parts[-1]
        try:
            if m.isdir():
                if not self.clear(parent, name, keep_dir=True):
                    os.mkdir(name, 0o700, dir_fd=parent)
                self.dirs.append((parts, (stat.S_IMODE(m.mode) & 0o755) | 0o700, int(m.mtime)))
                self.result.dirs += 1
            elif m.isreg():
                self._file(tar, m, parent, parts)
            elif m.issym():
                self._symlink(m, parent, parts)
            else:
                self._hardlink(m, parent, parts)
        except OSError as exc:
            raise CopyError(f"cannot create {self.rel(parts)}: {exc.strerror}") from None
        finally:
            os.close(parent)

    def _file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int, parts: tuple[str, ...]) -> None:
        if self.max_bytes is not None and self.result.bytes + m.size > self.max_bytes:
            raise CopyError(f"the copy holds more than {self.max_bytes} bytes of file data (max_bytes) at "
                            f"{self.rel(parts)}; nothing was kept")
        self.clear(parent, parts[-1])
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            src = tar.extractfile(m)
            while chunk := src.read(_CHUNK):
                out.write(chunk)
            os.fchmod(fd, (stat.S_IMODE(m.mode) & 0o755) | 0o600)
            out.flush()
            os.utime(fd, (m.mtime, m.mtime))
        self.result.files += 1
        self.result.bytes += m.size

    def _symlink(self, m: tarfile.TarInfo, parent: int, parts: tuple[str, ...]) -> None:
        target = m.linkname
        if self.confine:
            why = _lexical_escape(len(parts) - len(self.dest) - 1, target)
            if why:
                self.skip(parts, f"symlink to {shown(target)!r} {why}")
                return
        self.clear(parent, parts[-1])
        os.symlink(target, parts[-1], dir_fd=parent)
        self.links.append(parts)
        self.result.symlinks += 1

    def _hardlink(self, m: tarfile.TarInfo, parent: int, parts: tuple[str, ...]) -> None:
        try:
            target = self.parts(m.linkname, "hardlink target")
        except CopyError as exc:
            self.skip(parts, f"hardlink refused: {exc}")
            return
        tparent = self.open_dir(target[:-1], create=False)
        if tparent is None:
            self.skip(parts, f"hardlink to {shown(m.linkname)!r}, which is not a file of the copy")
            return
        try:
            try:
                st = os.stat(target[-1], dir_fd=tparent, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                self.skip(parts, f"hardlink to {shown(m.linkname)!r}, which is not a file of the copy")
                return
            if target == parts:
                return
            self.clear(parent, parts[-1])
            os.link(target[-1], parts[-1], src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(tparent)
        self.result.hardlinks += 1

    # end

    def finish(self) -> None:
        self._forget()
        if self.confine:
            for parts in self.links:
                why = self._resolved_escape(parts)
                if why:
                    parent = self.open_dir(parts[:-1], create=False)
                    if parent is not None:
                        try:
                            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                            if stat.S_ISLNK(st.st_mode):
                                os.unlink(parts[-1], dir_fd=parent)
                                self.result.symlinks -= 1
                        finally:
                            os.close(parent)
                    self._forget()
                    self.skip(parts, why)
        # Deepest folders first, so a read-only parent does not stop its children's updates.
        for parts, mode, mtime in sorted(self.dirs, key=lambda d: len(d[0]), reverse=True):
            fd = self.open_dir(parts, create=False)
            if fd is None:
                continue
            try:
                os.fchmod(fd, mode)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
        self._forget()

    def _resolved_escape(self, parts: tuple[str, ...]) -> str | None:
        """Where the link at ``parts`` points in the finished tree, following links inside the copy.

        Components that do not exist are taken as plain folder names (conservative: creating them later
        cannot make the link leave the copy unless that is already so here).
        """
        cur = list(parts[len(self.dest):-1])
        pending = _split(self._readlink(parts))
        hops = 0
        while pending:
            comp = pending.pop(0)
            if comp in ("", "."):
                continue
            if comp == "..":
                if not cur:
                    return "symlink resolves outside the copy (through other links of the copy)"
                cur.pop()
                continue
            cur.append(comp)
            link = self._readlink((*self.dest, *cur))
            if link is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    return "symlink chain too long"
                if link.startswith("/"):
                    return "symlink resolves to an absolute path (through other links of the copy)"
                cur.pop()
                pending = _split(link) + pending
        return None

    def _readlink(self, parts: tuple[str, ...]) -> str | None:
        parent = self.open_dir(parts[:-1], create=False)
        if parent is None:
            return None
        try:
            return os.readlink(parts[-1], dir_fd=parent)
        except OSError:  # missing or not a link
            return None
        finally:
            os.close(parent)


def _split(path: str | None) -> list[str]:
    return [] if path is None else path.split("/")


def _lexical_escape(depth: int, target: str) -> str | None:
    """Why a link ``depth`` folders below the copy's root, read as plain names, would leave the copy."""
    if not target:
        return "has an empty target"
    if target.startswith("/"):
        return "is absolute (it would point outside the copy)"
    if depth < 0:
        return "is the copied path itself"
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        depth += -1 if comp == ".." else 1
        if depth < 0:
            return "leaves the copy"
    return None


def unpack(
    fileobj: BinaryIO,
    root_fd: int,
    top: str,
    dest: tuple[str, ...],
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_entries: int | None = DEFAULT_MAX_ENTRIES,
    confine: bool = True,
) -> CopyResult:
    """Unpack a tar stream whose entries all lie under ``top`` to ``dest`` (path components under ``root_fd``).

    Missing folders on the way to ``dest`` are created (0755). ``confine=False`` (for archives this process packed itself) keeps symlinks as they are; everything
    else (no writes through links, no devices, mode bits) holds either way. Existing folders are merged,
    anything else in the way is replaced. Raises ``CopyError``; what was written before stays (callers
    unpack into a private staging folder).
    """
    u = _Unpacker(root_fd, top, dest, max_bytes, max_entries, confine)
    try:
        # "r|": a plain, uncompressed stream read front to back (no seeking, no decompression bomb).
        with tarfile.open(fileobj=fileobj, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
            for member in tar:
                u.add(tar, member)
    except tarfile.TarError as exc:
        u._forget()
        raise CopyError(f"unreadable archive: {exc}") from None
    except BaseException:
        u._forget()
        raise
    u.finish()
    return u.result


def unpack_to(
    fileobj: BinaryIO,
    host_path: str | Path,
    top: str,
    *,
    overwrite: bool = False,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_entries: int | None = DEFAULT_MAX_ENTRIES,
) -> CopyResult:
    """Unpack a hostile archive (entries under ``top``) to the new host path ``host_path``.

    The archive goes into a private staging folder next to ``host_path`` first and is renamed into place
    only when it was unpacked completely, so a refused archive leaves nothing behind. ``overwrite``
    replaces an existing ``host_path``; otherwise an existing one is a ``CopyError``.
    """
    dest = Path(os.path.abspath(host_path))
    check_destination(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".loopcoder-copy-", dir=dest.parent)
    root_fd = os.open(staging, _DIR)
    try:
        result = unpack(fileobj, root_fd, top, ("copy",), max_bytes=max_bytes, max_entries=max_entries)
        if not os.path.lexists(os.path.join(staging, "copy")):
            raise CopyError(f"the archive held nothing under {shown(top)!r}")
        if os.path.lexists(dest):
            if not overwrite:
                raise CopyError(f"{dest} appeared during the copy; pass overwrite=True to replace it")
            if os.path.isdir(dest) and not os.path.islink(dest):
                shutil.rmtree(dest)
            else:
                os.unlink(dest)
        os.rename("copy", dest, src_dir_fd=root_fd)
        return result
    finally:
        os.close(root_fd)
        shutil.rmtree(staging, ignore_errors=True)


def check_destination(dest: Path, overwrite: bool) -> None:
    if os.path.lexists(dest) and not overwrite:
        raise CopyError(f"{dest} exists; pass overwrite=True to replace it")
    if dest.parent == dest:
        raise CopyError("cannot copy onto the root folder /")
