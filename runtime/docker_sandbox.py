"""DockerSandbox: one container per task, the workspace bind-mounted at /testbed, locked down by default."""
from __future__ import annotations

import atexit
import io
import os
import select
import socket
import stat
import struct
import tarfile
import threading
import time
import uuid
import weakref
from pathlib import Path, PurePosixPath

from loopcoder.runtime.config import SandboxConfig, load_runtime_config
from loopcoder.runtime.engine import connect_docker
from loopcoder.runtime.errors import SandboxError
from loopcoder.runtime.output import HeadTailBuffer
from loopcoder.runtime.sandbox import WORKDIR, ExecResult
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
NOT_STARTED_EXIT_CODE = 126
SEALED_BASH = "/.loopcoder/bash"  # where the exec-only copy of the image's bash is mounted

_live: "weakref.WeakSet[DockerSandbox]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sandbox in list(_live):
        sandbox.close()


class DockerSandbox:
    """A running container with ``workspace`` mounted read-write at /testbed.

    Defaults (configs/runtime.yaml ``sandbox``): network ``none`` (only ``lo``), CPU/memory/pids limits,
    non-root user, all capabilities dropped, no-new-privileges, labels naming the run. PID 1 is the
    session supervisor run by a sealed (exec-only, hence non-dumpable) copy of the image's bash that is
    bind-mounted read-only at /.loopcoder/bash (see runtime/session.py); it also reaps orphans.
    The container is removed by ``close()`` (also on ``with`` exit, Ctrl-C, errors and interpreter exit)
    and by docker itself when this process dies (the supervisor exits when its stdin closes; auto-remove).
    When this process runs as root and the sandbox user differs from the workspace owner, the workspace
    is chowned (symlinks not followed) to the sandbox user so commands can write to it.
    """

    def __init__(
        self,
        workspace: str | Path,
        *,
        config: SandboxConfig | None = None,
        image: str | None = None,
        run_id: str | None = None,
        labels: dict[str, str] | None = None,
        client=None,
    ) -> None:
        self.config = config or load_runtime_config().sandbox
        self.workspace = Path(workspace).resolve()
        if not self.workspace.is_dir():
            raise SandboxError(f"workspace {self.workspace} is not a directory")
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
        self.uid, self.gid = _sandbox_user(self.config.user)
        self.labels = {
            LABEL: "1",
            "loopcoder.run": self.run_id,
            "loopcoder.host": socket.gethostname(),
            **_owner_labels(),
            "loopcoder.workspace": str(self.workspace),
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
        from docker.types import LogConfig

        api = self._client.api
        try:
            image_id = api.inspect_image(self.image)["Id"]
        except ImageNotFound:
            raise SandboxError(
                f"sandbox image {self.image!r} not found; build it with `loopcoder sandbox build-base`"
            ) from None
        sealed = _sealed_bash(api, image_id, self.image)
        _hand_over(self.workspace, self.uid, self.gid)
        host_config = api.create_host_config(
            binds={str(self.workspace): {"bind": WORKDIR, "mode": "rw"},
                   str(sealed): {"bind": SEALED_BASH, "mode": "ro"}},
            network_mode=self.config.network,
            nano_cpus=int(self.config.cpus * 1e9),
            mem_limit=self.config.memory,
            memswap_limit=self.config.memory,  # no swap: a memory hog meets the OOM killer, not the disk
            pids_limit=self.config.pids_limit,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=False,  # PID 1 must be the sealed supervisor: a dumpable init would expose the container's stdio
            auto_remove=True,
            log_config=LogConfig(type="none"),  # output goes to us over the attach stream, never to disk
        )
        try:
            created = api.create_container(
                self.image,
                command=[SEALED_BASH, "--noprofile", "--norc", "-c", BOOT, "loopcoder-supervisor",
                         "1" if self.config.keep_background else "0"],
                user=f"{self.uid}:{self.gid}",
                working_dir=WORKDIR,
                # stdin_open without detach sets StdinOnce: when our attach connection closes (even by a
                # crash of this process) docker closes the supervisor's stdin and the container ends.
                stdin_open=True,
                detach=False,
                tty=False,
                labels=self.labels,
                # The scripts travel in the environment, which only the sealed PID 1 can read; it drops them.
                environment={"LANG": "C.UTF-8", "__LC_SUPERVISOR": SUPERVISOR, "__LC_JOB": JOB},
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
        return f"DockerSandbox({cid}, image={self.image!r}, workspace={str(self.workspace)!r})"

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
            request = render_request(command, workdir, env, WORKDIR).encode("utf-8", "surrogateescape")
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

        target = _container_path(path)
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

        target = _container_path(path)
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


def _container_path(path: str) -> PurePosixPath:
    p = PurePosixPath(path)
    if not p.is_absolute():
        p = PurePosixPath(WORKDIR) / p
    return PurePosixPath(os.path.normpath(p))


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
    """Make the workspace writable by the sandbox user (chown, no symlink followed); only as root."""
    if os.geteuid() != 0:
        return
    st = workspace.stat()
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    os.lchown(workspace, uid, gid)
    for root, dirs, files in os.walk(workspace, followlinks=False):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
