"""`loopcoder doctor`: what this machine can run, and the fix for each problem found."""
from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
import time
from typing import Callable, Literal

from pydantic import BaseModel

from loopcoder.runtime.config import RuntimeConfig

Status = Literal["ok", "warn", "fail"]


class Check(BaseModel):
    name: str
    status: Status
    detail: str
    fix: str = ""


def check_docker(cfg: RuntimeConfig) -> tuple[Check, object | None]:
    from loopcoder.runtime.engine import ENGINE_FIX, connect_docker
    from loopcoder.runtime.errors import DockerUnavailableError

    try:
        client = connect_docker(timeout=10)
    except DockerUnavailableError as exc:
        return Check(name="docker engine", status="fail", detail=str(exc).split(";")[0], fix=ENGINE_FIX), None
    v = client.version()
    detail = f"engine {v.get('Version')} (API {v.get('ApiVersion')}), storage {client.info().get('Driver')}"
    return Check(name="docker engine", status="ok", detail=detail), client


def check_base_image(cfg: RuntimeConfig, client) -> Check:
    fix = "loopcoder sandbox build-base   (debootstrap from the Debian mirror, about 90 s, as root)"
    if client is None:
        return Check(name="base image", status="fail", detail="unknown: no Docker engine", fix=fix)
    from loopcoder.runtime.images import base_image_exists

    tag = cfg.images.base_image
    if not base_image_exists(client, tag):
        return Check(name="base image", status="fail", detail=f"{tag} not found", fix=fix)
    info = client.api.inspect_image(tag)
    return Check(name="base image", status="ok",
                 detail=f"{tag} {info['Id'][7:19]}, {info.get('Size', 0) / 1e6:.0f} MB")


def check_sandbox(cfg: RuntimeConfig, client) -> tuple[Check, object | None]:
    """Start a real sandbox from the base image and run one command in it; also its ``DiskBounds``."""
    if client is None:
        return Check(name="sandbox", status="fail", detail="skipped: no Docker engine", fix="see docker engine"), None
    from loopcoder.runtime.docker_sandbox import DockerSandbox
    from loopcoder.runtime.errors import RuntimeFailure

    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="loopcoder-doctor-") as ws:
            with DockerSandbox(ws, config=cfg.sandbox, image=cfg.images.base_image, client=client,
                               labels={"loopcoder.purpose": "doctor"}) as sb:
                res = sb.exec("ls /sys/class/net; id -u", timeout=30)
    except RuntimeFailure as exc:
        return Check(name="sandbox", status="fail", detail=str(exc),
                     fix="loopcoder sandbox build-base --force   (the image may be broken)"), None
    words = res.output.split()
    nets, uid = words[:-1], (words[-1] if words else "?")
    detail = f"started and ran a command in {time.monotonic() - started:.2f} s; interfaces {nets}, uid {uid}"
    ok = res.exit_code == 0 and nets == ["lo"] and uid != "0"
    return Check(name="sandbox", status="ok" if ok else "fail", detail=detail,
                 fix="" if ok else "check configs/runtime.yaml sandbox.network and sandbox.user"), sb.disk_bounds


def check_sandbox_disk(bounds) -> Check:
    """Which disk bounds a sandbox got (docs/runtime.md, "Disk"); a warning while the writable layer has none."""
    detail = bounds.describe() + "; /testbed (host disk): per file only"
    if bounds.layer_bytes:
        return Check(name="sandbox disk", status="ok", detail=detail)
    fix = ("set sandbox.disk_size" if "disk_size is null" in detail else
           "for a writable-layer quota put Docker's data-root on xfs mounted with pquota (overlay2), or use "
           "btrfs/zfs storage; until then a sandbox can fill the host disk with many files under its size cap")
    return Check(name="sandbox disk", status="warn", detail=detail, fix=fix)


def check_torch() -> tuple[Check, object | None]:
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken wheel raising OSError
        return Check(name="torch", status="fail", detail=f"cannot import torch ({exc})",
                     fix="make install   (installs the pinned CPU wheel torch==2.13.0)"), None
    return Check(name="torch", status="ok", detail=f"torch {torch.__version__}"), torch


def check_gpu(torch) -> Check:
    fix = "optional: run GPU work on a CUDA machine (see docs/gpu.md); everything else runs on the CPU"
    if torch is None:
        return Check(name="gpu", status="warn", detail="unknown: torch missing", fix=fix)
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return Check(name="gpu", status="ok", detail=", ".join(names))
    smi = " (nvidia-smi found: driver present, but this torch build has no CUDA)" if shutil.which("nvidia-smi") else ""
    return Check(name="gpu", status="warn", detail="no CUDA GPU visible to torch" + smi, fix=fix)


def check_grammars() -> Check:
    fix = "pip install tree-sitter-language-pack==0.13.0   (ships compiled grammars; 1.x downloads them at run time)"
    try:
        from tree_sitter_language_pack import get_parser

        version = importlib.metadata.version("tree-sitter-language-pack")
        bad = [lang for lang in ("python", "javascript", "go", "rust", "java")
               if get_parser(lang).parse(b"x").root_node is None]
    except Exception as exc:
        return Check(name="grammars", status="fail", detail=f"tree-sitter grammars unusable ({exc})", fix=fix)
    if bad:
        return Check(name="grammars", status="fail", detail=f"no parse for {bad}", fix=fix)
    return Check(name="grammars", status="ok",
                 detail=f"tree-sitter-language-pack {version}: python, javascript, go, rust, java parse offline")


def run_checks(cfg: RuntimeConfig, on_check: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check, in order; ``on_check`` sees each as soon as it is done."""
    out: list[Check] = []

    def add(check: Check) -> None:
        out.append(check)
        if on_check:
            on_check(check)

    docker_check, client = check_docker(cfg)
    add(docker_check)
    base = check_base_image(cfg, client)
    add(base)
    if base.status == "ok":
        sandbox_check, bounds = check_sandbox(cfg, client)
        add(sandbox_check)
        if bounds is not None:
            add(check_sandbox_disk(bounds))
    torch_check, torch = check_torch()
    add(torch_check)
    add(check_gpu(torch))
    add(check_grammars())
    return out
