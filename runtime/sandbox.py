"""The sandbox contract: what every place that runs agent code offers (Docker container or local shell).

Tools code against ``Sandbox`` and ``ExecResult`` only; ``DockerSandbox`` (runtime/docker_sandbox.py)
and ``LocalSandbox`` (runtime/local_sandbox.py) implement it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

# The workspace is mounted here in every sandbox; commands start here unless told otherwise.
WORKDIR = "/testbed"


class ExecResult(BaseModel):
    """Outcome of one command.

    ``output`` is stdout and stderr interleaved as the command wrote them; when it was longer than the
    sandbox's cap, its head and tail are kept and ``truncated_bytes`` says how many bytes were cut from the
    middle (a marker line in ``output`` says so too). ``exit_code`` is 124 after a timeout (``timed_out``),
    137 after the kernel's OOM killer ended the command (``oom_killed``), 126 when it could not be started.
    ``state_saved`` is False when the command's shell state (cwd, exports, functions) did not carry over
    and the previous state stays current: always after a timeout, and when the command ended in a way
    that skipped or cut short the save (killed, ``exec``); ``output`` then ends with a ``[loopcoder: ...]``
    line saying so (not after a timeout, which the contract already covers).
    """

    model_config = ConfigDict(frozen=True)

    exit_code: int
    output: str
    timed_out: bool
    truncated_bytes: int
    duration_s: float
    oom_killed: bool = False
    state_saved: bool = True

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class SkippedEntry(BaseModel):
    """One entry of a copied tree that was not created, and why (e.g. a symlink leaving the copy, a fifo)."""

    model_config = ConfigDict(frozen=True)

    path: str  # relative to the copy's root; bytes that are not UTF-8 shown as \xNN
    reason: str


class CopyResult(BaseModel):
    """What ``copy_in``/``copy_out`` created: counts, file bytes, and the entries left out."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    skipped: list[SkippedEntry] = []


@runtime_checkable
class Sandbox(Protocol):
    """A place to run shell commands on a task's workspace.

    Commands run in ONE persistent bash session: ``cd`` and ``export`` carry over to the next ``exec``.
    ``workdir`` and ``env`` apply to one command only. A timed-out command has its whole process tree
    killed and the sandbox stays usable. Paths given to ``read_file``/``write_file``/``copy_*`` are paths
    inside the sandbox (relative ones are relative to /testbed).

    ``copy_in(host_path, sandbox_path)`` copies a host file or folder so that it lands AT ``sandbox_path``
    (missing parent folders are created; a folder is merged into an existing folder, anything else is
    replaced); symlinks are copied as links, never followed on the host; owner = the sandbox user.
    ``copy_out(sandbox_path, host_path)`` copies a sandbox file or folder to the new host path ``host_path``
    (``overwrite=True`` replaces an existing one). It treats the archive as hostile: nothing is written
    outside ``host_path``, no symlink that leaves it, no device, fifo or setuid bit, and at most
    ``max_bytes`` of file data and ``max_entries`` entries (``CopyError`` otherwise); entries left out are
    listed in ``CopyResult.skipped``.
    """

    workspace: Path  # host directory mounted at /testbed

    def exec(
        self,
        command: str,
        timeout: float | None = None,
        workdir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult: ...

    def read_file(self, path: str) -> bytes: ...

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None: ...

    def copy_in(self, host_path: str | Path, sandbox_path: str) -> CopyResult: ...

    def copy_out(
        self,
        sandbox_path: str,
        host_path: str | Path,
        *,
        overwrite: bool = False,
        max_bytes: int | None = None,
        max_entries: int | None = None,
    ) -> CopyResult: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Sandbox": ...

    def __exit__(self, *exc: object) -> None: ...
