"""LocalSandbox: the Sandbox interface on this machine, for when Docker is not available. NOT isolated."""
from __future__ import annotations

import os
import posixpath
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path, PurePosixPath

from loopcoder.runtime.archive import (DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, check_destination, open_folder, pack,
                                       pack_path, unpack, unpack_to)
from loopcoder.runtime.config import RuntimeConfig, load_runtime_config
from loopcoder.runtime.errors import CopyError, SandboxError
from loopcoder.runtime.output import HeadTailBuffer
from loopcoder.runtime.sandbox import WORKDIR, CopyResult, ExecResult
from loopcoder.runtime.session import (
    JOB,
    NOTE_STATE_NOT_SAVED,
    add_notes,
    check_timeout,
    new_tag,
    render_request,
    state_file_saved,
)

OPT_IN_ENV = "LOOPCODER_ALLOW_LOCAL_SANDBOX"
TIMEOUT_EXIT_CODE = 124
WARNING = (
    "LocalSandbox runs agent commands directly on this machine: no container, no network or resource "
    "limits, full access to your files. Use it only for code you trust."
)


class LocalSandbox:
    """Runs commands in ``bash`` on the host with the same session, timeout and output-cap behaviour.

    Explicit opt-in: ``allow=True``, ``local.allow: true`` in configs/runtime.yaml, or the environment
    variable LOOPCODER_ALLOW_LOCAL_SANDBOX=1; otherwise construction raises SandboxError. Every sandbox
    prints a warning on stderr. Paths under /testbed map to the workspace; ``read_file``/``write_file``
    refuse any path that resolves (through symlinks) outside the workspace.
    """

    def __init__(self, workspace: str | Path, *, config: RuntimeConfig | None = None, allow: bool | None = None) -> None:
        cfg = config or load_runtime_config()
        if allow is None:
            allow = cfg.local.allow or os.environ.get(OPT_IN_ENV) == "1"
        if not allow:
            raise SandboxError(
                "LocalSandbox runs agent code unconfined on this machine; opt in with --set local.allow=true "
                f"or {OPT_IN_ENV}=1, or use Docker (`loopcoder doctor` says what is missing)"
            )
        self.config = cfg.sandbox
        self.shell = cfg.local.shell
        self.workspace = Path(workspace).resolve()
        if not self.workspace.is_dir():
            raise SandboxError(f"workspace {self.workspace} is not a directory")
        warnings.warn(WARNING, stacklevel=2)
        print(f"WARNING: {WARNING}", file=sys.stderr)
        self._dir = Path(tempfile.mkdtemp(prefix="loopcoder-local-"))
        (self._dir / "job.sh").write_text(JOB)
        self._state: int | None = None  # which of state.0 / state.1 holds the current shell state
        self._lock = threading.Lock()
        self._closed = False

    def exec(
        self,
        command: str,
        timeout: float | None = None,
        workdir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run ``command`` in the session's bash; see ``Sandbox`` for the contract."""
        timeout = check_timeout(self.config.default_timeout_s if timeout is None else timeout)
        with self._lock:
            if self._closed:
                raise SandboxError("sandbox is closed")
            tag = new_tag()
            wd = str(self._host_path(workdir)) if workdir else None
            request = render_request(command, wd, env, str(self.workspace))
            (self._dir / "request").write_bytes(request.encode("utf-8", "surrogateescape"))
            restore = "" if self._state is None else str(self._dir / f"state.{self._state}")
            target = 1 if self._state == 0 else 0
            out = self._dir / f"state.{target}"
            capture = HeadTailBuffer(self.config.output_limit_bytes)
            started = time.monotonic()
            # The exit status comes from the process itself: nothing the command prints is parsed.
            with open(self._dir / "request", "rb") as stdin:
                proc = subprocess.Popen(
                    [self.shell, "--noprofile", "--norc", str(self._dir / "job.sh"), restore, str(out)],
                    cwd=self.workspace,
                    env={**os.environ, "LOOPCODER_EXEC": tag},
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: a timeout kills the whole tree
                )
            timed_out = False
            fd = proc.stdout.fileno()
            try:
                while True:
                    remaining = started + timeout - time.monotonic()
                    if remaining <= 0:
                        timed_out = True
                        _kill_tree(proc.pid, tag)
                        break
                    ready, _, _ = select.select([fd], [], [], min(remaining, 0.05))
                    if ready:
                        chunk = os.read(fd, 1 << 16)
                        if not chunk:
                            break
                        capture.feed(chunk)
                    elif proc.poll() is not None and self.config.keep_background:
                        break  # background children may hold the pipe open; the command itself is done
                    elif proc.poll() is not None:
                        _kill_tree(proc.pid, tag)  # leftover background processes die with their command
            except BaseException:
                _kill_tree(proc.pid, tag)
                raise
            finally:
                exit_code = proc.wait()
                if not self.config.keep_background:
                    _kill_tree(proc.pid, tag)
                proc.stdout.close()
            saved = not timed_out and state_file_saved(out, tag)
            if saved:
                self._state = target
        notes = [] if saved or timed_out else [NOTE_STATE_NOT_SAVED]
        return ExecResult(
            exit_code=TIMEOUT_EXIT_CODE if timed_out else (exit_code if exit_code >= 0 else 128 - exit_code),
            output=add_notes(capture.render(), notes),
            timed_out=timed_out,
            truncated_bytes=capture.truncated_bytes,
            duration_s=time.monotonic() - started,
            state_saved=saved,
        )

    def read_file(self, path: str) -> bytes:
        """Bytes of a file inside the workspace (never through a symlink that leaves it)."""
        fd = self._open_inside(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Create or replace a file inside the workspace; parent folders are created."""
        host = self._host_path(path)
        self._check_inside(host.parent, path, must_exist=False)
        host.parent.mkdir(parents=True, exist_ok=True)
        self._check_inside(host.parent, path)
        fd = self._open_inside(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(host, mode)

    def copy_in(self, host_path: str | Path, sandbox_path: str) -> CopyResult:
        """Copy a host file or folder to ``sandbox_path`` inside the workspace; see ``Sandbox`` for the contract.

        Host symlinks are copied as links. Folders on the way to ``sandbox_path`` are never followed
        through a symlink (a ``CopyError`` instead), so nothing is written outside the workspace.
        """
        parts = self._workspace_parts(sandbox_path)
        if not parts:
            raise CopyError("cannot copy onto the workspace itself; name the destination inside it")
        with tempfile.TemporaryFile() as buf:
            pack_path(buf, host_path, parts[-1])
            buf.seek(0)
            root = open_folder(self.workspace)
            try:
                return unpack(buf, root, parts[-1], parts, max_bytes=None, max_entries=None, confine=False)
            finally:
                os.close(root)

    def copy_out(
        self,
        sandbox_path: str,
        host_path: str | Path,
        *,
        overwrite: bool = False,
        max_bytes: int | None = None,
        max_entries: int | None = None,
    ) -> CopyResult:
        """Copy a workspace file or folder to the new host path ``host_path``, with DockerSandbox's confinement.

        A symlink at ``sandbox_path`` itself is followed when it stays in the workspace; the tree is
        packed without following links and unpacked as hostile input (same limits and checks).
        """
        dest = Path(os.path.abspath(host_path))
        if Path(os.path.realpath(dest)).is_relative_to(self.workspace):
            raise CopyError(f"{dest} is inside the sandbox's workspace; copy out to a folder outside it")
        check_destination(dest, overwrite)
        max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        max_entries = DEFAULT_MAX_ENTRIES if max_entries is None else max_entries
        parts = self._workspace_parts(sandbox_path)
        for _ in range(16):
            if not parts:
                parent, name = open_folder(self.workspace.parent), self.workspace.name
                break
            parent, name = open_folder(self.workspace, parts[:-1]), parts[-1]
            try:
                link = os.readlink(name, dir_fd=parent)
            except FileNotFoundError:
                os.close(parent)
                raise CopyError(f"no such file or folder in the workspace: {sandbox_path}") from None
            except OSError:  # not a symlink
                break
            os.close(parent)
            target = link if link.startswith("/") else posixpath.join(WORKDIR, *parts[:-1], link)
            parts = self._workspace_parts(target)
        else:
            raise CopyError(f"too many levels of symbolic links at {sandbox_path}")
        try:
            with tempfile.TemporaryFile() as buf:
                packed = pack(buf, parent, name, name, max_bytes=max_bytes, max_entries=max_entries,
                              skip_special=True)
                buf.seek(0)
                result = unpack_to(buf, dest, name, overwrite=overwrite, max_bytes=max_bytes,
                                   max_entries=max_entries)
        finally:
            os.close(parent)
        return result.model_copy(update={"skipped": packed.skipped + result.skipped})

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "LocalSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths -----------------------------------------------------------------------------------

    def _host_path(self, path: str) -> Path:
        p = PurePosixPath(path)
        if p.is_absolute():
            try:
                p = p.relative_to(WORKDIR)
            except ValueError:
                if not Path(path).resolve().is_relative_to(self.workspace):
                    raise SandboxError(f"LocalSandbox only reaches files inside the workspace, not {path}") from None
                return Path(path)
        return self.workspace / p

    def _workspace_parts(self, path: str) -> tuple[str, ...]:
        """Components of ``path`` below the workspace (``..`` taken lexically); CopyError when outside it."""
        p = posixpath.normpath(path if path.startswith("/") else posixpath.join(WORKDIR, path))
        if p == WORKDIR or p.startswith(WORKDIR + "/"):
            rel = p[len(WORKDIR):]
        elif p == str(self.workspace) or p.startswith(str(self.workspace) + "/"):
            rel = p[len(str(self.workspace)):]
        else:
            raise CopyError(f"LocalSandbox only reaches files inside the workspace, not {path}")
        return tuple(c for c in rel.split("/") if c)

    def _check_inside(self, host: Path, shown: str, must_exist: bool = True) -> None:
        real = Path(os.path.realpath(host))
        if not real.is_relative_to(self.workspace) and (must_exist or real.exists()):
            raise SandboxError(f"{shown} resolves outside the workspace (symlink?); refusing to follow it")

    def _open_inside(self, path: str, flags: int, mode: int = 0o644) -> int:
        host = self._host_path(path)
        self._check_inside(host.parent, path)
        # O_NOFOLLOW: the last component must not be a symlink either (no check-then-open race on it).
        try:
            return os.open(host, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
        except FileNotFoundError:
            raise SandboxError(f"no such file in the workspace: {path}") from None
        except OSError as exc:
            if os.path.islink(host):
                raise SandboxError(f"{path} is a symlink; LocalSandbox does not follow symlinks") from None
            raise SandboxError(f"cannot open {path}: {exc.strerror}") from None


def _kill_tree(pgid: int, tag: str) -> None:
    """SIGKILL the process group and every process of ours whose environment carries the command's tag."""
    try:
        os.killpg(pgid, signal.SIGSTOP)
    except OSError:
        pass
    marker = f"LOOPCODER_EXEC={tag}".encode()
    for _ in range(3):
        for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                continue
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
