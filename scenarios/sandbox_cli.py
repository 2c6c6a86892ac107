"""`loopcoder sandbox build-base | build-env | build | env | gc` and `loopcoder doctor`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

sandbox_app = typer.Typer(help="Sandbox images and containers (Docker).", no_args_is_help=True)
console = Console(stderr=True)
out = Console()

CONFIG_OPT = typer.Option(None, "--config", help="Runtime config YAML (default: configs/runtime.yaml).")
SET_OPT = typer.Option([], "--set", help="Override a config key, e.g. --set images.mirror=http://host/debian")


def _config(config: Optional[Path], overrides: list[str]):
    from loopcoder.runtime.config import load_runtime_config

    return load_runtime_config(config, overrides)


def _progress(status, verbose: bool):
    """A progress callback: every line for -v and non-terminals (CI logs), else one status line."""
    plain = verbose or not sys.stderr.isatty()

    def progress(line: str) -> None:
        if line.startswith("warning: "):
            console.print(line, style="yellow", markup=False, highlight=False, soft_wrap=True)
        elif plain:
            console.print(line, markup=False, highlight=False)
        else:
            status.update(line[:100])

    return progress


@sandbox_app.command("build-base")
def build_base(
    method: Optional[str] = typer.Option(None, help="auto | debootstrap | dockerfile (default: images.method)"),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the image exists."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every line of debootstrap / docker build."),
    config: Optional[Path] = CONFIG_OPT,
    set_: list[str] = SET_OPT,
) -> None:
    """Build the sandbox base image; offline by debootstrap + docker import when no registry answers."""
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.runtime.images import build_base_image

    cfg = _config(config, set_)
    client = connect_docker()
    with console.status("building base image") as status:
        result = build_base_image(client, cfg.images, method=method, force=force, progress=_progress(status, verbose))
    if result.method == "existing":
        out.print(f"{result.tag} exists ({result.image_id[7:19]}); --force rebuilds it")
    else:
        out.print(f"built {result.tag} ({result.image_id[7:19]}, {result.size_bytes / 1e6:.0f} MB) "
                  f"with {result.method} in {result.seconds:.1f} s")


@sandbox_app.command("build-env")
def build_env(
    spec: Path = typer.Argument(..., help="YAML environment spec: apt_packages, pip_packages, setup, env, base_image."),
    config: Optional[Path] = CONFIG_OPT,
    set_: list[str] = SET_OPT,
) -> None:
    """Build (or reuse) the environment image for SPEC and print its content-hash tag."""
    from loopcoder.configs import load_config
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.runtime.images import EnvImageSpec, build_env_image

    cfg = _config(config, set_)
    env_spec = load_config(EnvImageSpec, spec)
    client = connect_docker()
    with console.status("building environment image") as status:
        result = build_env_image(client, env_spec, cfg.images, progress=lambda line: status.update(line[:100]))
    verb = "reused" if result.reused else f"built in {result.seconds:.1f} s"
    out.print(f"{result.tag} ({verb})")


@sandbox_app.command("build")
def build(
    context: Path = typer.Argument(..., help="Build context folder (a Terminal-Bench task dir, or its environment/)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Dockerfile (default: CONTEXT/Dockerfile)."),
    build_arg: list[str] = typer.Option([], "--build-arg", help="KEY=VALUE, as for docker build."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every line of the build."),
    config: Optional[Path] = CONFIG_OPT,
    set_: list[str] = SET_OPT,
) -> None:
    """Build (or reuse) an image from a Dockerfile and context; an unpullable FROM image is replaced by the
    offline base image, with a warning."""
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.runtime.errors import ImageBuildError
    from loopcoder.runtime.images import build_dockerfile_image

    args = {}
    for item in build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ImageBuildError(f"--build-arg {item!r} is not KEY=VALUE")
        args[key] = value
    cfg = _config(config, set_)
    client = connect_docker()
    with console.status("building image") as status:
        result = build_dockerfile_image(client, context, cfg.images, dockerfile=file, build_args=args,
                                        progress=_progress(status, verbose))
    verb = "reused" if result.reused else f"built in {result.seconds:.1f} s"
    out.print(f"{result.tag} ({verb})")


@sandbox_app.command("env")
def env(
    repo: Path = typer.Argument(..., help="Repository folder."),
    detect_only: bool = typer.Option(False, "--detect-only", help="Print what was detected; build nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the detection (and the image) as JSON on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every line of the build."),
    config: Optional[Path] = CONFIG_OPT,
    set_: list[str] = SET_OPT,
) -> None:
    """Detect a repository's Python dependencies and build (or reuse) its environment image: a venv at
    /opt/venv with the dependencies and pytest; the repository itself is mounted at /testbed at run time."""
    import json

    from loopcoder.runtime.repo_env import build_repo_env_image, detect_repo_env

    cfg = _config(config, set_)
    spec = detect_repo_env(repo)
    if not as_json:
        out.print(spec.summary(), markup=False, highlight=False, soft_wrap=True)
        out.print("installs: " + (" ".join(spec.requirements) or "-"), markup=False, highlight=False, soft_wrap=True)
        for note in spec.notes:
            console.print(f"note: {note}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    if detect_only:
        if as_json:
            out.print_json(json.dumps({"spec": spec.model_dump()}))
        return
    from loopcoder.runtime.engine import connect_docker

    client = connect_docker()
    with console.status("building environment image") as status:
        result = build_repo_env_image(client, spec, cfg.images, progress=_progress(status, verbose))
    if as_json:
        out.print_json(json.dumps({"spec": spec.model_dump(), "image": result.model_dump(exclude={"spec"})}))
    else:
        verb = "reused" if result.reused else f"built in {result.seconds:.1f} s"
        out.print(f"{result.tag} ({verb})")


@sandbox_app.command("gc")
def gc(
    all_: bool = typer.Option(False, "--all", help="Remove every LoopCoder sandbox container, live ones too."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
) -> None:
    """Remove sandbox containers left by runs whose process is gone (crashes, kill -9)."""
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.runtime.gc import remove_leftovers

    found = remove_leftovers(connect_docker(), everything=all_, dry_run=dry_run)
    for item in found:
        verb = "would remove" if dry_run else "removed"
        out.print(f"{verb} {item.name} ({item.container_id[:12]}, run {item.run_id or '?'}): {item.reason}")
    if not found:
        out.print("no leftover sandbox containers")


def doctor_command(
    config: Optional[Path] = CONFIG_OPT,
    set_: list[str] = SET_OPT,
) -> None:
    """Check Docker engine, base image, sandbox, torch, GPU and grammars; print the fix for each problem."""
    from loopcoder.scenarios.doctor import run_checks

    cfg = _config(config, set_)
    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    table = Table("check", "status", "detail", "fix", show_lines=False)
    with console.status("checking") as status:
        checks = run_checks(cfg, on_check=lambda c: status.update(f"checked {c.name}"))
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail, c.fix)
    out.print(table)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)
