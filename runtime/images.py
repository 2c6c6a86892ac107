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
started from them still get no network. Repository environments (a venv from a repository's dependency
files) live in ``runtime/repo_env.py`` and use the same machinery.

Images from a task's own Dockerfile and context (``build_dockerfile_image``) are tagged
``<build_repository>:<content hash>``; a FROM image that is neither local nor pullable is replaced by the
offline base image (with the host CA bundle), with a warning.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
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


def ca_lines() -> list[str]:
    """Dockerfile lines that install the host CA bundle (``ca-certificates.crt`` in the context) for pip and apt."""
    return [
        f"COPY ca-certificates.crt {CA_IN_IMAGE}",
        f"ENV SSL_CERT_FILE={CA_IN_IMAGE} PIP_CERT={CA_IN_IMAGE} REQUESTS_CA_BUNDLE={CA_IN_IMAGE}",
        f"RUN echo 'Acquire::https::CAInfo \"{CA_IN_IMAGE}\";' > /etc/apt/apt.conf.d/99loopcoder-ca",
    ]


def env_dockerfile(spec: EnvImageSpec, base_id: str, with_ca: bool) -> str:
    """Dockerfile of an environment image (without its identifying LABEL line)."""
    lines = [f"FROM {base_id}", "USER root"]
    if with_ca:
        lines += ca_lines()
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


# -- images from a Dockerfile and context ----------------------------------------------------------

# The rewritten Dockerfile travels in the context under this name; the .dockerignore sent along names it,
# so the engine drops it from the context after reading it (COPY . never sees it).
BUILD_DOCKERFILE = ".loopcoder.Dockerfile"


class DockerfileImage(BaseModel):
    """An image built from a Dockerfile and its context (or reused: same content hash)."""

    tag: str
    image_id: str
    content_hash: str
    reused: bool
    seconds: float
    substituted: dict[str, str] = {}  # FROM image (after ARG expansion) -> the image used instead
    warnings: list[str] = []


def build_dockerfile_image(
    client,
    context: str | Path,
    cfg: ImagesConfig,
    dockerfile: str | Path | None = None,
    build_args: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> DockerfileImage:
    """Build ``dockerfile`` (default ``context/Dockerfile``) with ``context``, reusing a same-content image.

    The tag is ``images.build_repository:<hash>`` of the Dockerfile, the context files that .dockerignore
    keeps (names, modes, contents, link targets), the build args, the offline base image's id and the
    ids of FROM images present locally. A FROM image that is neither local nor pullable (its registry
    does not answer within ``images.pull_probe_timeout_s``, or the pull fails) is replaced by the offline
    base image (with the host CA bundle, as environment images get it) and a warning naming the original
    is returned and passed to ``progress``. ``--platform`` flags are dropped (the image is built for this
    host), and BuildKit's automatic platform ARGs are passed when the Dockerfile declares them. The build
    has network (``images.build_network``). Raises ImageBuildError with one line.
    """
    from docker.utils.build import exclude_paths

    from loopcoder.runtime import dockerfile as dfmod

    started = time.monotonic()
    root = Path(context).resolve()
    if not root.is_dir():
        raise ImageBuildError(f"build context {root} is not a folder")
    df_path = Path(dockerfile) if dockerfile else root / "Dockerfile"
    if not df_path.is_absolute():
        df_path = root / df_path
    try:
        text = df_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImageBuildError(f"no Dockerfile at {df_path}") from None
    except UnicodeDecodeError:
        raise ImageBuildError(f"{df_path} is not UTF-8 text") from None
    args = {k: str(v) for k, v in (build_args or {}).items()}
    parsed = dfmod.parse(text, args)
    if not parsed.stages:
        raise ImageBuildError(f"{df_path} has no FROM instruction")

    ignore = root / ".dockerignore"
    ignore_text = ignore.read_text(errors="replace") if ignore.is_file() else None
    patterns = [ln.strip() for ln in (ignore_text or "").splitlines() if ln.strip() and not ln.strip().startswith("#")]
    files = sorted(exclude_paths(str(root), patterns, dockerfile=BUILD_DOCKERFILE) - {BUILD_DOCKERFILE})

    fallback_id = _image_id(client, cfg.base_image)
    if fallback_id is None:
        raise ImageBuildError(f"base image {cfg.base_image!r} not found; run `loopcoder sandbox build-base`")
    h = hashlib.sha256(b"loopcoder-dockerfile-v1\0")
    h.update(text.encode() + b"\0" + json.dumps(sorted(args.items())).encode() + b"\0")
    h.update(fallback_id.encode() + b"\0" + _ca_digest(cfg).encode() + b"\0")
    for stage in parsed.stages:
        if stage.external:
            h.update(f"{stage.resolved}={_image_id(client, stage.resolved) or '-'}\0".encode())
    _hash_context(h, root, files)
    digest = h.hexdigest()
    tag = f"{cfg.build_repository}:{digest[:20]}"

    existing = _image_id(client, tag)
    if existing is not None:
        labels = client.api.inspect_image(tag)["Config"].get("Labels") or {}
        substituted = json.loads(labels.get("loopcoder.substituted", "{}"))
        warnings = [f"FROM {src}: was not pullable when this image was built; it was built on the offline base "
                    f"image {cfg.base_image} instead" for src in substituted]
        for w in warnings:
            _say(progress, "warning: " + w)
        return DockerfileImage(tag=tag, image_id=existing, content_hash=digest, reused=True,
                               seconds=time.monotonic() - started, substituted=substituted, warnings=warnings)

    for ins, ref in parsed.copy_from:
        ok, why = image_available(client, ref, cfg, progress)
        if not ok:
            raise ImageBuildError(f"COPY --from={ref} (line {ins.first_line + 1}): {why}; an image whose files are "
                                  "copied cannot be replaced by the offline base")
    images: dict[int, str] = {}
    substituted: dict[str, str] = {}
    warnings: list[str] = []
    verdicts: dict[str, tuple[bool, str]] = {}
    for stage in parsed.stages:
        if not stage.external:
            continue
        if not stage.resolved:
            raise ImageBuildError(f"FROM on line {stage.instruction.first_line + 1} names no image "
                                  f"({stage.image!r} expands to nothing; pass --build-arg?)")
        if stage.resolved not in verdicts:
            verdicts[stage.resolved] = image_available(client, stage.resolved, cfg, progress)
        ok, why = verdicts[stage.resolved]
        if ok:
            continue
        if stage.resolved not in substituted:
            substituted[stage.resolved] = offline_base_with_ca(client, cfg, progress)
            warnings.append(_substitution_warning(stage.resolved, cfg.base_image, why))
            _say(progress, "warning: " + warnings[-1])
        images[stage.index] = substituted[stage.resolved]
    drop_platform = {s.index for s in parsed.stages if s.platform is not None}
    build_text = dfmod.rewrite(parsed, images, drop_platform) if images or drop_platform else text

    buildargs = dict(args)
    for name, value in _platform_args(client).items():
        if name in parsed.declared_args and name not in buildargs:
            buildargs[name] = value
    extra = ((ignore_text + "\n") if ignore_text is not None else ".dockerignore\n") + BUILD_DOCKERFILE + "\n"
    from docker.utils.build import create_archive

    _say(progress, f"building {tag} from {df_path} ({len(files)} context entries)")
    with tempfile.TemporaryFile() as ctx:
        create_archive(str(root), files=files, fileobj=ctx,
                       extra_files=[(".dockerignore", extra), (BUILD_DOCKERFILE, build_text)])
        ctx.seek(0)
        _run_build(client, ctx, tag, progress, pull=False, network_mode=cfg.build_network,
                   dockerfile=BUILD_DOCKERFILE, buildargs=buildargs,
                   labels={"loopcoder.build": digest, "loopcoder.substituted": json.dumps(substituted),
                           "loopcoder.dockerfile": str(df_path)})
    return DockerfileImage(tag=tag, image_id=client.api.inspect_image(tag)["Id"], content_hash=digest, reused=False,
                           seconds=time.monotonic() - started, substituted=substituted, warnings=warnings)


def image_available(client, ref: str, cfg: ImagesConfig, progress: Progress | None = None) -> tuple[bool, str]:
    """(True, "") when ``ref`` is local or could be pulled now, else (False, why), without hanging.

    A registry that does not accept a TCP connection within ``images.pull_probe_timeout_s`` is not asked
    at all; otherwise the engine pulls (progress streamed) and a failed pull counts as unavailable.
    """
    from docker.errors import APIError

    from loopcoder.runtime.dockerfile import registry_address

    if _image_id(client, ref) is not None:
        return True, ""
    host, port = registry_address(ref)
    try:
        with socket.create_connection((host, port), timeout=cfg.pull_probe_timeout_s):
            pass
    except OSError as exc:
        return False, f"not local, and its registry {host}:{port} is unreachable ({exc.strerror or exc})"
    _say(progress, f"pulling {ref}")
    try:
        for event in client.api.pull(ref, stream=True, decode=True):
            if "error" in event:
                return False, _one_line(f"pull failed: {event['error']}")
            line = " ".join(str(event.get(k, "")) for k in ("id", "status", "progress")).strip()
            if line:
                _say(progress, line)
    except APIError as exc:
        return False, _one_line(f"pull failed: {exc.explanation or exc}")
    return (True, "") if _image_id(client, ref) else (False, "pull finished without the image")


def offline_base_with_ca(client, cfg: ImagesConfig, progress: Progress | None = None) -> str:
    """Tag of the offline base image with the host CA bundle installed (an environment image of no packages)."""
    return build_env_image(client, EnvImageSpec(), cfg, progress).tag


def _substitution_warning(original: str, base: str, why: str) -> str:
    return (f"FROM {original}: cannot be pulled ({why}); built on the offline base image {base} instead, "
            "which may lack tools the original image has")


def _image_id(client, ref: str) -> str | None:
    from docker.errors import APIError, ImageNotFound

    try:
        return client.api.inspect_image(ref)["Id"]
    except ImageNotFound:
        return None
    except APIError:  # e.g. an invalid reference: not something the engine has
        return None


def _ca_digest(cfg: ImagesConfig) -> str:
    return hashlib.sha256(cfg.ca_bundle.read_bytes() if cfg.ca_bundle.is_file() else b"").hexdigest()


def _hash_context(h, root: Path, files: list[str]) -> None:
    """Names, types, permission bits, file contents and link targets; mtimes and owners do not count."""
    for rel in files:
        path = root / rel
        st = path.lstat()
        mode = st.st_mode & 0o7777
        if os.path.islink(path):
            h.update(f"l {rel}\0{os.readlink(path)}\0".encode("utf-8", "surrogateescape"))
        elif path.is_dir():
            h.update(f"d {rel}\0{mode:o}\0".encode("utf-8", "surrogateescape"))
        elif path.is_file():
            fh = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    fh.update(chunk)
            h.update(f"f {rel}\0{mode:o}\0{fh.hexdigest()}\0".encode("utf-8", "surrogateescape"))


def _platform_args(client) -> dict[str, str]:
    """BuildKit's automatic platform ARGs, for the engine's own platform (the legacy builder lacks them)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
    info = client.api.version()
    os_name = info.get("Os", "linux")
    machine = info.get("Arch") or arch.get(platform.machine(), platform.machine())
    variant = "v7" if machine == "arm" else ""
    plat = f"{os_name}/{machine}" + (f"/{variant}" if variant else "")
    out = {}
    for prefix in ("TARGET", "BUILD"):
        out.update({f"{prefix}PLATFORM": plat, f"{prefix}OS": os_name, f"{prefix}ARCH": machine,
                    f"{prefix}VARIANT": variant})
    return out


# -- helpers ---------------------------------------------------------------------------------------


def _docker_build(client, files: dict[str, bytes], tag: str, progress: Progress | None, pull: bool,
                  network_mode: str, **build_kw) -> list[str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return _run_build(client, buf, tag, progress, pull=pull, network_mode=network_mode, **build_kw)


# Lines worth quoting when a build fails: pip's and apt's own error lines say more than the exit status.
_ERROR_LINE = re.compile(r"^(ERROR:|E: |error:|Error: )")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the engine colours a RUN's stderr


def _run_build(client, context, tag: str, progress: Progress | None, **build_kw) -> list[str]:
    """Send a tar build context to the engine, streaming its output; the output's last lines are returned.

    Raises ImageBuildError with one line: the engine's error, the first error line of the output (pip's
    ``ERROR: ...``, apt's ``E: ...``) and the last lines before the failure. The untagged image of the last
    step that succeeded is removed then (the legacy builder keeps it, and its parents, otherwise).
    """
    from docker.errors import APIError

    last: list[str] = []
    first_error: str | None = None
    step_image: str | None = None
    try:
        for event in client.api.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True,
                                      decode=True, **build_kw):
            if "error" in event:
                detail = f"; first error line: {first_error}" if first_error else ""
                raise ImageBuildError(_one_line(f"building {tag} failed: {event['error'].strip()}{detail} "
                                                f"(last output: {' | '.join(last[-3:])})"))
            text = _ANSI.sub("", event.get("stream") or event.get("status") or "")
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                if first_error is None and _ERROR_LINE.match(line.strip()):
                    first_error = line.strip()
                m = _STEP_IMAGE.match(line)
                if m:
                    step_image = m.group(1)
                last.append(line)
                del last[:-50]
                _say(progress, line)
    except APIError as exc:
        _drop_untagged(client, step_image)
        raise ImageBuildError(_one_line(f"building {tag} failed: {exc.explanation or exc}")) from None
    except ImageBuildError:
        _drop_untagged(client, step_image)
        raise
    return last


_STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")


def _drop_untagged(client, image: str | None) -> None:
    """Remove a failed build's last intermediate image when nothing names or builds on it (never forced)."""
    if not image:
        return
    try:
        if client.api.inspect_image(image).get("RepoTags"):
            return  # e.g. the FROM image itself
        client.api.remove_image(image)  # refused by the engine when another image or container uses it
    except Exception:  # best effort: a leftover layer only costs disk
        pass


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
