"""Runtime settings (``configs/runtime.yaml``): sandbox limits and user, image names, Debian mirror."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loopcoder.configs import load_config

FALLBACK_MIRROR = "http://deb.debian.org/debian"
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size_bytes(size: str) -> int:
    """Bytes in a size such as ``512m`` or ``2g`` (binary units, as Docker reads them)."""
    m = re.fullmatch(r"(\d+)([bkmg]?)", size.strip().lower())
    if not m:
        raise ValueError(f"{size!r} is not a size such as 512m or 2g")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _size(v: str | None) -> str | None:
    if v is not None:
        if size_bytes(v) <= 0:
            raise ValueError("must be larger than 0")
        v = v.strip().lower()
    return v


class SandboxConfig(BaseModel):
    """How one sandbox container is started."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["docker", "local"] = "docker"  # local also needs local.allow: true
    image: str = "loopcoder/base:bookworm"
    # "uid:gid" inside the container; "host" runs as the host user's uid:gid (workspace stays theirs).
    user: str = "1000:1000"
    cpus: float = Field(2.0, gt=0)
    memory: str = "2g"
    pids_limit: int = Field(512, ge=16)
    network: Literal["none", "bridge", "host"] = "none"
    output_limit_bytes: int = Field(100_000, ge=64)
    default_timeout_s: float = Field(600.0, gt=0)
    # false: a command's leftover background processes are killed when it returns (a fork bomb or a
    # forgotten server cannot outlive its command); true: they keep running, as in a terminal.
    keep_background: bool = False
    # Disk a sandbox can fill (docs/runtime.md, "Disk"). null switches a bound off.
    max_file_size: str | None = "1g"  # RLIMIT_FSIZE of every process: no file, /testbed included, grows past it
    tmp_size: str | None = "25%"  # /tmp is a tmpfs of this size or share of `memory` (it counts as memory)
    disk_size: str | None = "10g"  # writable-layer quota (storage_opt size) where the storage driver has one
    labels: dict[str, str] = {}

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if v != "host" and not re.fullmatch(r"[1-9]\d*:\d+", v):
            raise ValueError("must be 'host' or a non-root 'uid:gid' such as 1000:1000")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not re.fullmatch(r"\d+[bkmg]?", v.lower()):
            raise ValueError("must look like 512m or 2g")
        return v.lower()

    @field_validator("max_file_size", "tmp_size", "disk_size", mode="before")
    @classmethod
    def _bytes_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # YAML reads 4096 as a number

    @field_validator("max_file_size", "disk_size")
    @classmethod
    def _sizes(cls, v: str | None) -> str | None:
        return _size(v)

    @field_validator("tmp_size")
    @classmethod
    def _tmp_size(cls, v: str | None) -> str | None:
        if v is not None and v.strip().endswith("%"):
            if not re.fullmatch(r"\d{1,2}%", v.strip()) or int(v.strip()[:-1]) == 0:
                raise ValueError("a share of memory must be 1% to 99%, e.g. 25%")
            return v.strip()
        return _size(v)

    @model_validator(mode="after")
    def _tmp_below_memory(self) -> "SandboxConfig":
        # tmpfs pages are charged to the container's memory and cannot be swapped out: a /tmp as large as
        # the memory limit, once full, would leave the sandbox's processes nothing but the OOM killer.
        if self.tmp_size is not None and self.tmp_bytes() >= size_bytes(self.memory):
            raise ValueError(f"tmp_size ({self.tmp_size}) must be smaller than memory ({self.memory}): "
                             "/tmp is a tmpfs and its files count as memory")
        return self

    def tmp_bytes(self) -> int | None:
        """Size of the /tmp tmpfs in bytes (None: no tmpfs, /tmp is in the container's writable layer)."""
        if self.tmp_size is None:
            return None
        if self.tmp_size.endswith("%"):
            return size_bytes(self.memory) * int(self.tmp_size[:-1]) // 100
        return size_bytes(self.tmp_size)


class LocalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: bool = False  # LocalSandbox runs agent code on this machine unconfined: explicit opt-in only
    shell: str = "/bin/bash"


class ImagesConfig(BaseModel):
    """Base and environment images."""

    model_config = ConfigDict(extra="forbid")

    base_image: str = "loopcoder/base:bookworm"
    env_repository: str = "loopcoder/env"
    # auto: a FROM Dockerfile when the registry answers, else debootstrap + docker import.
    method: Literal["auto", "debootstrap", "dockerfile"] = "auto"
    from_image: str = "debian:bookworm-slim"
    registry_probe: str = "registry-1.docker.io:443"
    suite: str = "bookworm"
    mirror: str | None = None  # None: the host's apt mirror (/etc/apt/sources.list*), else FALLBACK_MIRROR
    packages: list[str] = ["python3", "git", "bash", "coreutils", "patch", "procps"]
    sandbox_uid: int = 1000
    build_network: Literal["bridge", "host", "none"] = "bridge"  # image builds only; sandboxes stay offline
    ca_bundle: Path = Path("/etc/ssl/certs/ca-certificates.crt")
    # Images built from a task's own Dockerfile and context (tag: <build_repository>:<content hash>).
    build_repository: str = "loopcoder/build"
    # How long to wait for a registry's TCP answer before a FROM image that is not local counts as unpullable.
    pull_probe_timeout_s: float = Field(3.0, gt=0)


class WorkspaceConfig(BaseModel):
    """Git workspaces (``runtime/workspace.py``)."""

    model_config = ConfigDict(extra="forbid")

    exclude_paths: list[str] = []  # git pathspec globs left out of extracted patches
    # Where the host-private repository of each workspace lives (never mounted in a sandbox). None: the
    # sibling "<tree>.loopcoder-git"; a folder: "<folder>/<tree name>-<hash of its path>.git".
    private_git_root: Path | None = None
    git_user_name: str = "LoopCoder"
    git_user_email: str = "loopcoder@localhost"


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sandbox: SandboxConfig = SandboxConfig()
    local: LocalConfig = LocalConfig()
    images: ImagesConfig = ImagesConfig()
    workspace: WorkspaceConfig = WorkspaceConfig()


def load_runtime_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RuntimeConfig:
    """Load ``path`` or the shipped ``configs/runtime.yaml``, with ``key=value`` overrides."""
    return load_config(RuntimeConfig, path, overrides, default="runtime")


def host_debian_mirror(sources_dirs: tuple[Path, ...] = (Path("/etc/apt/sources.list.d"),),
                       sources_list: Path = Path("/etc/apt/sources.list")) -> str:
    """The first Debian archive URL this host's apt uses (deb822 or one-line format), else the fallback."""
    files = [p for d in sources_dirs if d.is_dir() for p in sorted(d.iterdir()) if p.suffix in (".sources", ".list")]
    if sources_list.is_file():
        files.insert(0, sources_list)
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                urls = line.split()[1:]
            elif line.startswith("deb "):
                urls = [w for w in line.split()[1:] if "://" in w][:1]
            else:
                continue
            for url in urls:
                if "debian" in url and "security" not in url:
                    return url.rstrip("/")
    return FALLBACK_MIRROR
