"""Sandbox images: the base image (built without any image registry) and per-repository environments.

Base image, two ways:
- ``debootstrap``: ``debootstrap --variant=minbase --include=<packages> <suite>`` from the Debian mirror
  into a folder, add the sandbox user, drop apt caches, then ``docker import`` the folder as a tar stream.
  Needs root and the debootstrap package; no registry is contacted.
- ``dockerfile``: ``FROM <images.from_image>`` plus apt-get, for when that image is local or a registry
  answers.

Environment images layer a repository's dependencies (apt and pip packages, setup commands) on the base
image. They are built with network (the host's CA bundle is copied in, so TLS to the package index works)
and tagged ``<env_repository>:<content hash>``, so the same spec on the same base is built once. Sandboxes
started from them still get no network.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict

from loopcoder.runtime.config import ImagesConfig, host_debian_mirror
from loopcoder.runtime.errors import ImageBuildError

Progress = Callable[[str], None]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Not /etc/ssl/certs/ca-certificates.crt: installing the ca-certificates package (pulled in by many
# packages) regenerates that file and would drop the host's CAs (e.g. a TLS-intercepting mirror's).
CA_IN_IMAGE = "/usr/local/share/loopcoder/host-ca-bundle.crt"


class BaseImage(BaseModel):
    tag: str
    image_id: str
    method: Literal["debootstrap", "dockerfile", "existing"]
    seconds: float
    size_bytes: int


class EnvImageSpec(BaseModel):
    """What a repository needs on top of the base image (installed at build time only)."""

    model_config = ConfigDict(extra="forbid")

    base_image: str | None = None  # default: images.base_image
    apt_packages: list[str] = []
    pip_packages: list[str] = []  # pip requirement strings, e.g. "pytest==8.3.5"
    setup: list[str] = []  # shell commands run as root at build time, after the packages
    env: dict[str, str] = {}


class EnvImage(BaseModel):
    tag: str
    image_id: str
    content_hash: str
    reused: bool
    seconds: float


def _say(progress: Progress | None, line: str) -> None:
    if progress:
        progress(line)


# -- base image ------------------------------------------------------------------------------------


def base_image_exists(client, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.api.inspect_image(tag)
        return True
    except ImageNotFound:
        return False


def choose_method(client, cfg: ImagesConfig, method: str | None = None) -> str:
    """``debootstrap`` or ``dockerfile``: ``auto`` takes the Dockerfile when its FROM image is local or the
    registry answers a TCP connect within 3 s, debootstrap otherwise."""
    method = method or cfg.method
    if method != "auto":
        return method
    if base_image_exists(client, cfg.from_image):
        return "dockerfile"
    host, _, port = cfg.registry_probe.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return "dockerfile"
    except OSError:
        return "debootstrap"


def build_base_image(
    client,
    cfg: ImagesConfig,
    method: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> BaseImage:
    """Build ``cfg.base_image`` (skipped when it exists, unless ``force``); ImageBuildError on failure."""
    started = time.monotonic()
    if not force and base_image_exists(client, cfg.base_image):
        info = client.api.inspect_image(cfg.base_image)
        return BaseImage(tag=cfg.base_image, image_id=info["Id"], method="existing", seconds=0.0,
                         size_bytes=info.get("Size", 0))
    chosen = choose_method(client, cfg, method)
    _say(progress, f"building {cfg.base_image} with {chosen}")
    if chosen == "debootstrap":
        image_id = _build_debootstrap(client, cfg, progress)
    elif chosen == "dockerfile":
        image_id = _build_dockerfile(client, cfg, progress)
    else:
        raise ImageBuildError(f"unknown build method {chosen!r}: use auto, debootstrap or dockerfile")
    info = client.api.inspect_image(image_id)
    return BaseImage(tag=cfg.base_image, image_id=info["Id"], method=chosen,
                     seconds=time.monotonic() - started, size_bytes=info.get("Size", 0))


def debootstrap_command(cfg: ImagesConfig, target: Path) -> list[str]:
    mirror = cfg.mirror or host_debian_mirror()
    return ["debootstrap", "--variant=minbase", f"--include={','.join(cfg.packages)}", cfg.suite, str(target), mirror]


def _build_debootstrap(client, cfg: ImagesConfig, progress: Progress | None) -> str:
    if not shutil.which("debootstrap"):
        raise ImageBuildError("debootstrap is not installed; `apt-get install -y debootstrap` (as root)")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap must run as root; rerun as root or use --method dockerfile")
    work = Path(tempfile.mkdtemp(prefix="loopcoder-rootfs-", dir="/var/tmp"))
    rootfs = work / "rootfs"
    try:
        cmd = debootstrap_command(cfg, rootfs)
        _say(progress, "$ " + shlex.join(cmd))
        tail = _stream(cmd, progress)
        if tail[0] != 0:
            raise ImageBuildError(f"debootstrap failed (exit {tail[0]}): {' | '.join(tail[1][-3:])}")
        _prepare_rootfs(rootfs, cfg.sandbox_uid)
        _say(progress, f"importing {rootfs} as {cfg.base_image}")
        repo, tag = _split_tag(cfg.base_image)
        mirror = cfg.mirror or host_debian_mirror()
        changes = [
            f"ENV PATH={PATH}",
            "ENV LANG=C.UTF-8",
            "WORKDIR /testbed",
            'CMD ["bash"]',
            f'LABEL loopcoder.base="1" loopcoder.method="debootstrap" loopcoder.suite="{cfg.suite}" '
            f'loopcoder.mirror="{mirror}"',
        ]
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            chunks = iter(lambda: tar.stdout.read(1 << 20), b"")
            out = client.api.import_image_from_stream(chunks, repository=repo, tag=tag, changes=changes)
        finally:
            tar.stdout.close()
            rc = tar.wait()
        if rc != 0:
            raise ImageBuildError(f"tar of {rootfs} failed with exit status {rc}")
        status = _last_json(out)
        if "error" in status:
            raise ImageBuildError(f"docker import failed: {status['error']}")
        return cfg.base_image
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepare_rootfs(rootfs: Path, uid: int) -> None:
    """The sandbox user (``sandbox``, uid/gid ``uid``) with a home, and no apt caches."""
    passwd, group = rootfs / "etc/passwd", rootfs / "etc/group"
    if f":{uid}:" not in passwd.read_text():
        with passwd.open("a") as f:
            f.write(f"sandbox:x:{uid}:{uid}:LoopCoder sandbox:/home/sandbox:/bin/bash\n")
        with group.open("a") as f:
            f.write(f"sandbox:x:{uid}:\n")
        shadow = rootfs / "etc/shadow"
        if shadow.exists():
            with shadow.open("a") as f:
                f.write("sandbox:!:19000:0:99999:7:::\n")
    home = rootfs / "home/sandbox"
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, uid)
    (rootfs / "testbed").mkdir(exist_ok=True)
    os.chown(rootfs / "testbed", uid, uid)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        d = rootfs / cache
        if d.is_dir():
            for entry in d.iterdir():
                if entry.is_file() and entry.name not in ("lock",):
                    entry.unlink()


def base_dockerfile(cfg: ImagesConfig) -> str:
    lines = [f"FROM {cfg.from_image}"]
    if cfg.packages:
        pkgs = " ".join(shlex.quote(p) for p in cfg.packages)
        lines.append(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            f"{pkgs} && rm -rf /var/lib/apt/lists/*"
        )
    uid = cfg.sandbox_uid
    lines += [
        f"RUN getent passwd {uid} >/dev/null || (groupadd --gid {uid} sandbox && "
        f"useradd --uid {uid} --gid {uid} --create-home --shell /bin/bash sandbox)",
        f"RUN mkdir -p /testbed && chown {uid}:{uid} /testbed",
        f"ENV PATH={PATH} LANG=C.UTF-8",
        "WORKDIR /testbed",
        'LABEL loopcoder.base="1" loopcoder.method="dockerfile"',
        'CMD ["bash"]',
    ]
    return "\n".join(lines) + "\n"


def _build_dockerfile(client, cfg: ImagesConfig, progress: Progress | None) -> str:
    pull = not base_image_exists(client, cfg.from_image)
    _docker_build(client, {"Dockerfile": base_dockerfile(cfg).encode()}, cfg.base_image, progress, pull=pull,
                  network_mode=cfg.build_network)
    return cfg.base_image


# -- environment images ----------------------------------------------------------------------------


def env_image_tag(client, spec: EnvImageSpec, cfg: ImagesConfig) -> tuple[str, str, str]:
    """(tag, content hash, Dockerfile): the hash covers the Dockerfile (spec on the base image's id) and the
    CA bundle copied in, so a changed spec, base image or bundle gives a new tag."""
    from docker.errors import ImageNotFound

    base = spec.base_image or cfg.base_image
    try:
        base_id = client.api.inspect_image(base)["Id"]
    except ImageNotFound:
        raise ImageBuildError(f"base image {base!r} not found; run `loopcoder sandbox build-base`") from None
    ca = cfg.ca_bundle.read_bytes() if cfg.ca_bundle.is_file() else b""
    body = env_dockerfile(spec, base_id, with_ca=bool(ca))
    digest = hashlib.sha256(body.encode() + b"\0" + hashlib.sha256(ca).hexdigest().encode()).hexdigest()
    dockerfile = body + f'LABEL loopcoder.env="{digest}" loopcoder.base-image="{base_id}"\n'
    return f"{cfg.env_repository}:{digest[:20]}", digest, dockerfile


def env_dockerfile(spec: EnvImageSpec, base_id: str, with_ca: bool) -> str:
    """Dockerfile of an environment image (without its identifying LABEL line)."""
    lines = [f"FROM {base_id}", "USER root"]
    if with_ca:
        lines += [
            f"COPY ca-certificates.crt {CA_IN_IMAGE}",
            f"ENV SSL_CERT_FILE={CA_IN_IMAGE} PIP_CERT={CA_IN_IMAGE} REQUESTS_CA_BUNDLE={CA_IN_IMAGE}",
            f"RUN echo 'Acquire::https::CAInfo \"{CA_IN_IMAGE}\";' > /etc/apt/apt.conf.d/99loopcoder-ca",
        ]
    apt = list(spec.apt_packages)
    if spec.pip_packages and "python3-pip" not in apt:
        apt.append("python3-pip")
    if apt:
        lines.append(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            + " ".join(shlex.quote(p) for p in apt) + " && rm -rf /var/lib/apt/lists/*"
        )
    if spec.pip_packages:
        lines.append(
            "RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --disable-pip-version-check "
            + " ".join(shlex.quote(p) for p in spec.pip_packages)
        )
    for command in spec.setup:
        lines.append("RUN " + command)
    for key, value in spec.env.items():
        lines.append(f"ENV {key}={json.dumps(value)}")
    return "\n".join(lines) + "\n"


def build_env_image(client, spec: EnvImageSpec, cfg: ImagesConfig, progress: Progress | None = None) -> EnvImage:
    """The environment image for ``spec``: reused when its content-hash tag exists, built otherwise."""
    started = time.monotonic()
    tag, digest, dockerfile = env_image_tag(client, spec, cfg)
    if base_image_exists(client, tag):
        return EnvImage(tag=tag, image_id=client.api.inspect_image(tag)["Id"], content_hash=digest, reused=True,
                        seconds=time.monotonic() - started)
    files: dict[str, bytes] = {}
    with_ca = cfg.ca_bundle.is_file()
    if with_ca:
        files["ca-certificates.crt"] = cfg.ca_bundle.read_bytes()
    files["Dockerfile"] = dockerfile.encode()
    _say(progress, f"building {tag}")
    _docker_build(client, files, tag, progress, pull=False, network_mode=cfg.build_network)
    return EnvImage(tag=tag, image_id=client.api.inspect_image(tag)["Id"], content_hash=digest, reused=False,
                    seconds=time.monotonic() - started)


# -- helpers ---------------------------------------------------------------------------------------


def _docker_build(client, files: dict[str, bytes], tag: str, progress: Progress | None, pull: bool,
                  network_mode: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    from docker.errors import APIError

    last: list[str] = []
    try:
        for event in client.api.build(fileobj=buf, custom_context=True, tag=tag, rm=True, forcerm=True,
                                      pull=pull, decode=True, network_mode=network_mode):
            if "error" in event:
                raise ImageBuildError(f"building {tag} failed: {event['error'].strip()} "
                                      f"(last output: {' | '.join(last[-3:])})")
            line = (event.get("stream") or event.get("status") or "").rstrip()
            if line:
                last.append(line)
                _say(progress, line)
    except APIError as exc:
        raise ImageBuildError(f"building {tag} failed: {exc.explanation or exc}") from None


def _stream(cmd: list[str], progress: Progress | None) -> tuple[int, list[str]]:
    lines: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            del lines[:-50]
            _say(progress, line)
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.stdout.close()
    return proc.wait(), lines


def _split_tag(name: str) -> tuple[str, str]:
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "latest"
    return repo, tag


def _last_json(out) -> dict:
    text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}
