"""DockerSandbox: one container per task, the workspace bind-mounted at /testbed, locked down by default."""
from __future__ import annotations

import atexit
import base64
import io
import json
import os
import select
import socket
import stat
import struct
import tarfile
import tempfile
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from loopcoder.runtime.archive import (DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, check_destination, pack_path,
                                       unpack_to)
from loopcoder.runtime.config import SandboxConfig, load_runtime_config, size_bytes
from loopcoder.runtime.engine import connect_docker
from loopcoder.runtime.errors import CopyError, SandboxError
from loopcoder.runtime.output import HeadTailBuffer
from loopcoder.runtime.sandbox import WORKDIR, CopyResult, ExecResult
from loopcoder.runtime.session import (
    BOOT,
    JOB,
    MONITOR_LOST,
    NOT_STARTED,
    NOTE_MONITOR_LOST,
    NOTE_NOT_STARTED,
    NOTE_STATE_NOT_SAVED,
    READY,
    STATE_NOT_SAVED,
    SUPERVISOR,
    EndMarkerReader,
    add_notes,
    check_timeout,
    new_secret,
    new_tag,
    render_request,
)

LABEL = "loopcoder.sandbox"  # every sandbox container carries it; `loopcoder sandbox gc` looks for it
START_TIMEOUT_S = 30.0
KILL_GRACE_S = 10.0  # after a timeout: how long the supervisor may take to kill the job and answer
TIMEOUT_EXIT_CODE = 124
# The session's own files (session.SUPERVISOR's RUN) get a small tmpfs of their own: a command that fills
# /tmp (or the disk quota) must not leave the next command without its saved state. (The archive API does
# not see a tmpfs mount; nothing reads or writes these files through it.)
SESSION_DIR = "/tmp/.loopcoder"
SESSION_DIR_SIZE = "64m"
# Go's os.FileMode bits, as the engine reports them in a path stat (X-Docker-Container-Path-Stat).
_GO_MODE_DIR = 1 << 31
_GO_MODE_SYMLINK = 1 << 27
NOT_STARTED_EXIT_CODE = 126
SEALED_BASH = "/.loopcoder/bash"  # where the exec-only copy of the image's bash is mounted

_live: "weakref.WeakSet[DockerSandbox]" = weakref.WeakSet()

# Capabilities a task container may add back (TaskContainer.cap_add). DAC_OVERRIDE and DAC_READ_SEARCH are
# never allowed: with either, root could read the exec-only sealed bash, the supervisor would no longer be
# non-dumpable and its /proc files (the container's stdio, its environment) would be open to commands.
# SYS_PTRACE, SYS_ADMIN and the rest are refused for the same reason or because they undo the lock-down.
TASK_CAPS = frozenset({"CHOWN", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL"})


@dataclass(frozen=True)
class TaskContainer:
    """Task-container mode (Terminal-Bench style tasks): root inside, the task's own working directory.

    The container runs as uid 0 with every capability dropped (``cap_add`` may add back members of
    ``TASK_CAPS``; none by default: a root shell creates, writes and deletes its own files without any)
    and ``no-new-privileges``; nothing of the host is mounted except the sealed bash (read-only); files go
    in and out with ``copy_in``/``copy_out``. ``network`` is ``none`` (only ``lo``) unless the task
    declares it needs one. ``env`` is the environment every command starts with.
    """

    workdir: str = "/app"
    network: str = "none"  # none | bridge
    env: tuple[tuple[str, str], ...] = ()
    cap_add: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not PurePosixPath(self.workdir).is_absolute():
            raise SandboxError(f"task working directory {self.workdir!r} is not an absolute path")
        if self.network not in ("none", "bridge"):
            raise SandboxError(f"task network {self.network!r} is not none or bridge")
        bad = [c for c in self.cap_add if c not in TASK_CAPS]
        if bad:
            raise SandboxError(f"capabilities {', '.join(bad)} cannot be added to a task container; "
                               f"allowed: {', '.join(sorted(TASK_CAPS))}")


@atexit.register
def _close_all() -> None:
    for sandbox in list(_live):
        sandbox.close()


@dataclass(frozen=True)
class DiskBounds:
    """What bounds the disk a sandbox can fill (None: that bound is off or unsupported)."""

    max_file_bytes: int | None  # RLIMIT_FSIZE of every process in the container (the workspace included)
    tmp_bytes: int | None  # size of the /tmp tmpfs
    layer_bytes: int | None  # quota of the container's writable layer (storage_opt size)
    layer_note: str = ""  # why the writable layer has no quota

    def describe(self) -> str:
        def mb(n: int | None) -> str:
            return f"{n / (1 << 20):,.0f} MiB"

        layer = (f"writable layer {mb(self.layer_bytes)}" if self.layer_bytes
                 else f"writable layer unbounded ({self.layer_note or 'sandbox.disk_size is null'})")
        return "; ".join([
            f"per file {mb(self.max_file_bytes)}" if self.max_file_bytes else "per file unbounded",
            f"/tmp tmpfs {mb(self.tmp_bytes)}" if self.tmp_bytes else "/tmp in the writable layer",
            layer,
        ])


# Per engine (API address): why it gives no writable-layer quota, "" when it does. Asked once per process.
_LAYER_QUOTA: dict[str, str] = {}


class DockerSandbox:
    """A running container with ``workspace`` mounted read-write at /testbed.

    Defaults (configs/runtime.yaml ``sandbox``): network ``none`` (only ``lo``), CPU/memory/pids limits,
    non-root user, all capabilities dropped, no-new-privileges, labels naming the run. PID 1 is the
    session supervisor run by a sealed (exec-only, hence non-dumpable) copy of the image's bash that is
    bind-mounted read-only at /.loopcoder/bash (see runtime/session.py); it also reaps orphans.
    The container is removed by ``close()`` (also on ``with`` exit, Ctrl-C, errors and interpreter exit)
    and by docker itself when this process dies (the supervisor exits when its stdin closes; auto-remove).
    When this process runs as root, every workspace entry not owned by the sandbox user is chowned
    (symlinks not followed) to it so commands can write to it. ``disk_bounds`` says which disk bounds
    (``sandbox.max_file_size``, ``tmp_size``, ``disk_size``) this container got.
    """

    def __init__(
        self,
        workspace: str | Path | None,
        *,
        config: SandboxConfig | None = None,
        image: str | None = None,
        run_id: str | None = None,
        labels: dict[str, str] | None = None,
        client=None,
        task: TaskContainer | None = None,
    ) -> None:
        self.config = config or load_runtime_config().sandbox
        self.task = task
        if task is not None:
            # Task-container mode: no workspace mount; the task's files live in the image and its layer.
            if workspace is not None:
                raise SandboxError("a task container mounts no workspace; pass workspace=None")
            self.workspace = None
            self.workdir = task.workdir
        else:
            self.workspace = Path(workspace).resolve()
            if not self.workspace.is_dir():
                raise SandboxError(f"workspace {self.workspace} is not a directory")
            self.workdir = WORKDIR
        self.image = image or self.config.image
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._client = client or connect_docker()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._sock_holder = None
        self._frames = _FrameReader()
        self._broken: str | None = None
        self._closed = False
        self.container_id: str | None = None
        self.disk_bounds: DiskBounds | None = None
        self.uid, self.gid = (0, 0) if task is not None else _sandbox_user(self.config.user)
        self.labels = {
            LABEL: "1",
            "loopcoder.run": self.run_id,
            "loopcoder.host": socket.gethostname(),
            **_owner_labels(),
            "loopcoder.workspace": str(self.workspace) if self.workspace else f"task:{self.workdir}",
            **self.config.labels,
            **(labels or {}),
        }
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        _live.add(self)

    # -- lifecycle -------------------------------------------------------------------------------

    def _start(self) -> None:
        from docker.errors import APIError, ImageNotFound

        api = self._client.api
        try:
            image_id = api.inspect_image(self.image)["Id"]
        except ImageNotFound:
            raise SandboxError(
                f"sandbox image {self.image!r} not found; build it with `loopcoder sandbox build-base`"
            ) from None
        sealed = _sealed_bash(api, image_id, self.image)
        if self.workspace is not None:
            _hand_over(self.workspace, self.uid, self.gid)
        host_config = self._host_config(api, sealed)
        env = {"LANG": "C.UTF-8"}
        if self.task is not None:
            env.update(dict(self.task.env))
        env.update({"__LC_SUPERVISOR": SUPERVISOR, "__LC_JOB": JOB})
        try:
            created = api.create_container(
                self.image,
                command=[SEALED_BASH, "--noprofile", "--norc", "-c", BOOT, "loopcoder-supervisor",
                         "1" if self.config.keep_background else "0"],
                user=f"{self.uid}:{self.gid}",
                working_dir=self.workdir,
                # stdin_open without detach sets StdinOnce: when our attach connection closes (even by a
                # crash of this process) docker closes the supervisor's stdin and the container ends.
                stdin_open=True,
                detach=False,
                tty=False,
                labels=self.labels,
                # The scripts travel in the environment, which only the sealed PID 1 can read; it drops them.
                environment=env,
                host_config=host_config,
                name=f"loopcoder-{self.run_id}-{uuid.uuid4().hex[:6]}",
            )
            self.container_id = created["Id"]
            holder = api.attach_socket(
                self.container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            self._sock_holder = holder
            self._sock = getattr(holder, "_sock", holder)
            self._sock.settimeout(None)
            api.start(self.container_id)
        except APIError as exc:
            raise SandboxError(f"could not start a sandbox from {self.image!r}: {exc.explanation or exc}") from None
        buf = b""
        deadline = time.monotonic() + START_TIMEOUT_S
        while READY not in buf:
            chunk = self._recv(deadline - time.monotonic())
            if chunk is None:
                raise SandboxError(
                    f"sandbox from {self.image!r} did not start its shell (needs bash in the image): "
                    + buf.decode(errors="replace")[-300:].replace("\n", " ")
                )
            buf += chunk
            if len(buf) > 65536:
                buf = buf[-65536:]

    def _host_config(self, api, sealed: Path) -> dict:
        """Limits, mounts and lock-down of the container; sets ``disk_bounds``."""
        from docker.types import DriverConfig, LogConfig, Mount, Ulimit

        cfg = self.config
        fsize = size_bytes(cfg.max_file_size) if cfg.max_file_size else None
        tmp = cfg.tmp_bytes()
        layer = size_bytes(cfg.disk_size) if cfg.disk_size else None
        note = _layer_quota_refusal(self._client, self.image) if layer else ""
        if note:
            layer = None
        self.disk_bounds = DiskBounds(fsize, tmp, layer, note)
        mounts = []
        if tmp:
            # An anonymous volume backed by tmpfs, not a plain tmpfs mount: the archive API (read_file,
            # write_file) sees volumes but not tmpfs mounts. Removed with the container (v=True, AutoRemove).
            mounts.append(Mount("/tmp", None, type="volume", driver_config=DriverConfig(
                "local", {"type": "tmpfs", "device": "tmpfs", "o": f"size={tmp},mode=1777,nosuid,nodev"})))
        binds = {str(sealed): {"bind": SEALED_BASH, "mode": "ro"}}
        if self.workspace is not None:
            binds[str(self.workspace)] = {"bind": WORKDIR, "mode": "rw"}
        return api.create_host_config(
            binds=binds,
            network_mode=self.task.network if self.task is not None else cfg.network,
            nano_cpus=int(cfg.cpus * 1e9),
            mem_limit=cfg.memory,
            memswap_limit=cfg.memory,  # no swap: a memory hog meets the OOM killer, not the disk
            pids_limit=cfg.pids_limit,
            cap_drop=["ALL"],
            cap_add=list(self.task.cap_add) if self.task is not None and self.task.cap_add else None,
            security_opt=["no-new-privileges"],
            init=False,  # PID 1 must be the sealed supervisor: a dumpable init would expose the container's stdio
            auto_remove=True,
            log_config=LogConfig(type="none"),  # output goes to us over the attach stream, never to disk
            mounts=mounts or None,
            tmpfs={SESSION_DIR: f"rw,noexec,nosuid,nodev,size={SESSION_DIR_SIZE},mode=0700,uid={self.uid},gid={self.gid}"},
            ulimits=[Ulimit(name="fsize", soft=fsize, hard=fsize)] if fsize else None,
            storage_opt={"size": str(layer)} if layer else None,
        )

    def close(self) -> None:
        """Remove the container (idempotent, never raises)."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self.container_id is not None:
            try:
                self._client.api.remove_container(self.container_id, force=True, v=True)
            except Exception:  # already gone (auto-remove) or engine away: nothing left to do here
                pass

    def __enter__(self) -> "DockerSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        cid = (self.container_id or "")[:12]
        where = f"workspace={str(self.workspace)!r}" if self.workspace else f"task workdir={self.workdir!r}"
        return f"DockerSandbox({cid}, image={self.image!r}, {where})"

    # -- commands --------------------------------------------------------------------------------

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
            self._check_usable()
            secret, tag = new_secret(), new_tag()
            request = render_request(command, workdir, env, self.workdir).encode("utf-8", "surrogateescape")
            capture = HeadTailBuffer(self.config.output_limit_bytes)
            reader = EndMarkerReader(secret, capture)
            started = time.monotonic()
            self._send(b"run %s %s %d\n" % (secret.encode(), tag.encode(), len(request)) + request)
            timed_out = False
            deadline = started + timeout
            try:
                while not reader.done:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        if timed_out:
                            self._broken = "the supervisor did not answer after killing a timed-out command"
                            raise SandboxError(f"sandbox {self.container_id[:12]}: {self._broken}")
                        timed_out = True
                        self._send(b"kill %s\n" % tag.encode())
                        deadline = time.monotonic() + KILL_GRACE_S
                        continue
                    chunk = self._recv(remaining)
                    if chunk is None:
                        reader.flush_pending()
                        self._broken = "the container stopped"
                        raise SandboxError(
                            f"sandbox {self.container_id[:12]} stopped during a command ({self._exit_reason()}); "
                            "start a new sandbox"
                        )
                    if chunk:
                        self._feed(reader, chunk)
            except KeyboardInterrupt:
                self._interrupt(tag, reader)
                raise
        return self._result(reader, capture, timed_out, time.monotonic() - started)

    def _result(self, reader: EndMarkerReader, capture: HeadTailBuffer, timed_out: bool, duration: float) -> ExecResult:
        """The ExecResult of an answered command: exit code, notes for what the end line's flags say."""
        flags, notes = reader.flags, []
        exit_code = reader.exit_code
        if NOT_STARTED in flags:
            exit_code = NOT_STARTED_EXIT_CODE
            notes.append(NOTE_NOT_STARTED.format(limit=self.config.pids_limit))
        elif timed_out:
            exit_code = TIMEOUT_EXIT_CODE  # a timed-out command never saves its state: no note for that
        elif MONITOR_LOST in flags:
            notes.append(NOTE_MONITOR_LOST)
        elif STATE_NOT_SAVED in flags:
            notes.append(NOTE_STATE_NOT_SAVED)
        return ExecResult(
            exit_code=exit_code,
            output=add_notes(capture.render(), notes),
            timed_out=timed_out,
            truncated_bytes=capture.truncated_bytes,
            duration_s=duration,
            oom_killed=reader.oom_kills > 0,
            state_saved=not (timed_out or flags),
        )

    def _feed(self, reader: EndMarkerReader, chunk: bytes) -> None:
        try:
            reader.feed(chunk)
        except SandboxError as exc:
            self._broken = "it sent a malformed end line"
            raise SandboxError(f"sandbox {self.container_id[:12]}: {exc}") from None

    def _interrupt(self, tag: str, reader: EndMarkerReader) -> None:
        """Ctrl-C during a command: kill it and drain its answer so the session stays usable."""
        try:
            self._send(b"kill %s\n" % tag.encode())
            deadline = time.monotonic() + KILL_GRACE_S
            while not reader.done and time.monotonic() < deadline:
                chunk = self._recv(deadline - time.monotonic())
                if chunk is None:
                    break
                reader.feed(chunk)
        except BaseException:
            pass
        if not reader.done:
            self._broken = "a command was interrupted and could not be stopped"

    def _check_usable(self) -> None:
        if self._closed:
            raise SandboxError("sandbox is closed")
        if self._broken:
            raise SandboxError(f"sandbox {self.container_id[:12]} is unusable ({self._broken}); start a new one")

    def _exit_reason(self) -> str:
        try:
            state = self._client.api.inspect_container(self.container_id)["State"]
            return f"exit status {state.get('ExitCode')}, OOM-killed {state.get('OOMKilled')}"
        except Exception:
            return "container already removed"

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self._broken = f"connection lost: {exc}"
            raise SandboxError(f"sandbox connection lost ({exc}); start a new sandbox") from None

    def _recv(self, timeout: float) -> bytes | None:
        """Next payload bytes from the attach stream: b"" when ``timeout`` passed, None at end of stream."""
        while True:
            data = self._frames.pop()
            if data:
                return data
            if timeout <= 0:
                return b""
            ready, _, _ = select.select([self._sock], [], [], min(timeout, 3600.0))
            if not ready:
                return b""
            try:
                raw = self._sock.recv(1 << 16)
            except OSError:
                return None
            if not raw:
                return None
            self._frames.feed(raw)
            timeout = 0.0 if self._frames.has_payload() else timeout

    # -- files -----------------------------------------------------------------------------------

    def read_file(self, path: str) -> bytes:
        """Bytes of a regular file in the container; symlinks resolve inside the container, never on the host."""
        from docker.errors import APIError, NotFound

        target = _container_path(path, self.workdir)
        for _ in range(16):
            try:
                stream, _ = self._client.api.get_archive(self.container_id, str(target))
            except NotFound:
                raise SandboxError(f"no such file in the sandbox: {target}") from None
            except APIError as exc:
                raise SandboxError(f"cannot read {target} from the sandbox: {exc.explanation or exc}") from None
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                if member is None:
                    raise SandboxError(f"cannot read {target}: empty archive")
                if member.issym():
                    target = PurePosixPath(os.path.normpath(target.parent / member.linkname))
                    continue
                if not member.isfile():
                    raise SandboxError(f"{target} is not a regular file")
                return tar.extractfile(member).read()
        raise SandboxError(f"too many levels of symbolic links at {path}")

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Create or replace a file in the container, owned by the sandbox user; parent folders are created."""
        from docker.errors import APIError, NotFound

        target = _container_path(path, self.workdir)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(target.name)
            info.size, info.mode, info.mtime = len(payload), mode, int(time.time())
            info.uid, info.gid = self.uid, self.gid
            tar.addfile(info, io.BytesIO(payload))
        for attempt in range(2):
            try:
                self._client.api.put_archive(self.container_id, str(target.parent), buf.getvalue())
                return
            except NotFound:
                if attempt:
                    break
                made = self.exec(f"mkdir -p -- {_q(str(target.parent))}", timeout=30)
                if made.exit_code != 0:
                    raise SandboxError(f"cannot create {target.parent}: {made.output.strip()}") from None
            except APIError as exc:
                raise SandboxError(f"cannot write {target}: {exc.explanation or exc}") from None
        raise SandboxError(f"cannot write {target}: parent folder missing")


    # -- copies (tar streams) ----------------------------------------------------------------------

    def copy_in(self, host_path: str | Path, sandbox_path: str) -> CopyResult:
        """Copy a host file or folder so that it lands at ``sandbox_path``; see ``Sandbox`` for the contract.

        Host symlinks are copied as links (never followed); every entry is owned by the sandbox user;
        missing parent folders are created (owned by the sandbox user, mode 0755). The engine resolves
        ``sandbox_path`` inside the container's file system, never on the host.
        """
        from docker.errors import APIError

        target = _container_path(sandbox_path, self.workdir)
        if target.name in ("", ".."):
            raise CopyError(f"cannot copy onto {target} in the sandbox; name the destination itself")
        anchor, missing = self._existing_folder(target.parent)
        lead = tuple("/".join(missing[: i + 1]) for i in range(len(missing)))
        with tempfile.TemporaryFile() as buf:
            result = pack_path(buf, host_path, "/".join((*missing, target.name)), owner=(self.uid, self.gid),
                               lead_dirs=lead)
            buf.seek(0)
            try:
                self._client.api.put_archive(self.container_id, str(anchor), buf)
            except APIError as exc:
                raise CopyError(f"cannot copy to {target} in the sandbox: {exc.explanation or exc}") from None
        return result

    def copy_out(
        self,
        sandbox_path: str,
        host_path: str | Path,
        *,
        overwrite: bool = False,
        max_bytes: int | None = None,
        max_entries: int | None = None,
    ) -> CopyResult:
        """Copy a sandbox file or folder to the new host path ``host_path``; see ``Sandbox`` for the contract.

        A symlink at ``sandbox_path`` itself is resolved inside the container (up to 16 hops). The archive
        is unpacked by ``runtime/archive.py`` as hostile input (limits: ``DEFAULT_MAX_BYTES``,
        ``DEFAULT_MAX_ENTRIES`` unless given). ``host_path`` may not lie in the workspace: the sandbox can
        write there, so it could redirect the copy while it is made.
        """
        dest = Path(os.path.abspath(host_path))
        if self.workspace is not None and Path(os.path.realpath(dest)).is_relative_to(self.workspace):
            raise CopyError(f"{dest} is inside the sandbox's workspace (the sandbox can change it while the copy "
                            "is made); copy out to a folder outside it")
        check_destination(dest, overwrite)
        source = _container_path(sandbox_path, self.workdir)
        for _ in range(16):
            st = self._stat(source)
            if st is None:
                raise CopyError(f"no such file or folder in the sandbox: {source}")
            if not int(st.get("mode", 0)) & _GO_MODE_SYMLINK:
                break
            link = PurePosixPath(st.get("linkTarget") or "")
            source = PurePosixPath(os.path.normpath(source.parent / link))
        else:
            raise CopyError(f"too many levels of symbolic links at {sandbox_path}")
        if source.name in ("", ".."):
            raise CopyError("cannot copy the sandbox's root folder; name a folder in it")
        api = self._client.api
        # identity: the engine would otherwise gzip the stream (CPU on both sides, and a second format to parse).
        res = api._get(api._url("/containers/{0}/archive", self.container_id), params={"path": str(source)},
                       headers={"Accept-Encoding": "identity"}, stream=True)
        try:
            if res.status_code != 200:
                raise CopyError(f"cannot copy {source} out of the sandbox: {_api_error_text(res)}")
            return unpack_to(res.raw, dest, source.name, overwrite=overwrite,
                             max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
                             max_entries=DEFAULT_MAX_ENTRIES if max_entries is None else max_entries)
        finally:
            res.close()

    def _stat(self, path: PurePosixPath) -> dict | None:
        """The engine's stat of a container path (name, size, mode as Go FileMode, linkTarget), None if absent."""
        api = self._client.api
        res = api.head(api._url("/containers/{0}/archive", self.container_id), params={"path": str(path)},
                       timeout=api.timeout)
        if res.status_code == 404:
            return None
        if res.status_code != 200:
            raise CopyError(f"cannot look up {path} in the sandbox: {_api_error_text(res)}")
        return json.loads(base64.b64decode(res.headers["X-Docker-Container-Path-Stat"]))

    def _existing_folder(self, folder: PurePosixPath) -> tuple[PurePosixPath, list[str]]:
        """The nearest existing ancestor of ``folder`` (itself included) and the names missing below it."""
        missing: list[str] = []
        while True:
            st = self._stat(folder)
            if st is not None:
                if not int(st.get("mode", 0)) & (_GO_MODE_DIR | _GO_MODE_SYMLINK):
                    raise CopyError(f"{folder} in the sandbox is not a folder")
                return folder, missing[::-1]
            if folder.parent == folder:
                raise CopyError("the sandbox has no root folder")
            missing.append(folder.name)
            folder = folder.parent


class _FrameReader:
    """Demultiplexes docker's attach stream (8-byte header: stream, 0, 0, 0, big-endian length)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, raw: bytes) -> None:
        self._buf += raw

    def has_payload(self) -> bool:
        return len(self._buf) >= 8

    def pop(self) -> bytes:
        out = bytearray()
        while len(self._buf) >= 8:
            (size,) = struct.unpack(">I", self._buf[4:8])
            if len(self._buf) < 8 + size:
                # Hand out what is there of a partial frame, keep its header with the rest of the size.
                avail = len(self._buf) - 8
                if avail:
                    out += self._buf[8:]
                    self._buf[4:8] = struct.pack(">I", size - avail)
                    del self._buf[8:]
                break
            out += self._buf[8 : 8 + size]
            del self._buf[: 8 + size]
        return bytes(out)


def _layer_quota_refusal(client, image: str) -> str:
    """Why this engine gives containers no writable-layer quota ("" when it does); asked once per engine.

    Docker supports ``storage_opt size`` only on some storage (overlay2 on xfs mounted with pquota, btrfs,
    zfs, devicemapper); elsewhere it refuses to create the container. A throwaway container is created
    (never started) to find out, then removed.
    """
    from docker.errors import APIError

    api = client.api
    engine = str(getattr(api, "base_url", ""))
    if engine in _LAYER_QUOTA:
        return _LAYER_QUOTA[engine]
    try:
        probe = api.create_container(image, command=["true"], labels={LABEL: "1", "loopcoder.purpose": "quota-probe"},
                                     host_config=api.create_host_config(storage_opt={"size": "1g"}))
    except APIError as exc:
        reason = " ".join(str(exc.explanation or exc).split())
        try:
            info = client.info()
            storage = f"{info.get('Driver', '?')} on {dict(info.get('DriverStatus') or []).get('Backing Filesystem', '?')}"
        except Exception:
            storage = "this engine's storage"
        _LAYER_QUOTA[engine] = f"{storage}: {reason}"
    else:
        _LAYER_QUOTA[engine] = ""
        try:
            api.remove_container(probe["Id"], force=True, v=True)
        except APIError:
            pass  # `loopcoder sandbox gc` removes it (labelled, never started)
    return _LAYER_QUOTA[engine]


_sealed_lock = threading.Lock()
_sealed: dict[str, Path] = {}  # image id -> host path of its sealed bash, checked once per process


def _sealed_bash(api, image_id: str, image: str) -> Path:
    """Host path of an exec-only (0o111) copy of the image's own /bin/bash, extracted once per image id.

    Cached under $XDG_CACHE_HOME/loopcoder/sealed-bash/<image id>/bash and bind-mounted read-only: a
    process that execs a binary it cannot read is made non-dumpable by the kernel, which is what keeps
    the sandbox's own processes out of the supervisor's /proc files (runtime/session.py). A bind mount
    costs nothing at start; copying the binary into each container cost ~100 ms (measured).
    """
    with _sealed_lock:
        path = _sealed.get(image_id)
        if path is not None:
            return path
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loopcoder" / "sealed-bash"
        path = cache / image_id.removeprefix("sha256:") / "bash"
        if not _is_sealed(path):
            data = _image_file(api, image_id, image, ("/bin/bash", "/usr/bin/bash"))
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                tmp = path.with_name(f".bash-{uuid.uuid4().hex}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o111)
                os.replace(tmp, path)
            except OSError as exc:
                raise SandboxError(
                    f"cannot write the sandbox's sealed shell to {path.parent} ({exc.strerror}); "
                    "point XDG_CACHE_HOME at a writable folder"
                ) from None
        _sealed[image_id] = path
        return path


def _is_sealed(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return (stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o111 and st.st_uid == os.geteuid()
            and st.st_size > 0)


def _image_file(api, image_id: str, image: str, paths: tuple[str, ...]) -> bytes:
    """Bytes of the first of ``paths`` that is a regular file in an image (symlinks followed inside it).

    Read through a container that is created and removed, never started.
    """
    from docker.errors import APIError, NotFound

    labels = {LABEL: "1", "loopcoder.purpose": "sealed-bash", **_owner_labels()}
    cid = api.create_container(image_id, command=["true"], labels=labels, network_disabled=True)["Id"]
    try:
        for path in paths:
            target = PurePosixPath(path)
            for _ in range(16):
                try:
                    stream, _ = api.get_archive(cid, str(target))
                except (NotFound, APIError):
                    break
                with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                    member = tar.next()
                    if member is not None and member.issym():
                        target = PurePosixPath(os.path.normpath(target.parent / member.linkname))
                        continue
                    if member is not None and member.isfile():
                        return tar.extractfile(member).read()
                break
    finally:
        try:
            api.remove_container(cid, force=True)
        except Exception:  # removal failed: `loopcoder sandbox gc` finds it by its label
            pass
    raise SandboxError(f"image {image!r} has no {' or '.join(paths)}; sandbox images need bash")


def _owner_labels() -> dict[str, str]:
    """pid and kernel start time of this process: `sandbox gc` treats the run as dead once they change."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            start = f.read().rsplit(b")", 1)[1].split()[19].decode()
    except OSError:
        start = ""
    return {"loopcoder.pid": str(pid), "loopcoder.pid_start": start}


def _container_path(path: str, root: str = WORKDIR) -> PurePosixPath:
    p = PurePosixPath(path)
    if not p.is_absolute():
        p = PurePosixPath(root) / p
    return PurePosixPath(os.path.normpath(p))


def _api_error_text(res) -> str:
    try:
        return res.json().get("message", res.text).strip()
    except ValueError:
        return f"HTTP {res.status_code}"


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _sandbox_user(user: str) -> tuple[int, int]:
    """uid, gid the container runs as; never root."""
    if user == "host" or os.geteuid() != 0:
        # Not root: we cannot hand the workspace to another uid, so the sandbox runs as us.
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:
            raise SandboxError("sandbox.user=host would run the sandbox as root; set sandbox.user to uid:gid")
        return uid, gid
    uid, gid = (int(x) for x in user.split(":"))
    return uid, gid


def _hand_over(workspace: Path, uid: int, gid: int) -> None:
    """Make the workspace writable by the sandbox user: lchown (no symlink followed) each entry that is not
    theirs yet; only as root.

    Every entry is looked at, not only the root: files the host made as root since an earlier sandbox
    (a checkout, an applied patch) sit in a folder that is already the sandbox user's.
    """
    if os.geteuid() != 0:
        return

    def give(path: str) -> None:
        try:
            st = os.lstat(path)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.lchown(path, uid, gid)
        except FileNotFoundError:
            pass  # removed while we walked

    give(str(workspace))
    for root, dirs, files in os.walk(workspace, followlinks=False):
        for name in dirs + files:
            give(os.path.join(root, name))
