"""Images from a task's Dockerfile and context: FROM replaced when unpullable, content-hashed reuse, errors.

Docker Hub is unreachable here; the tests name images under ``registry.invalid`` (a name that resolves
nowhere), so they behave the same on a machine with a registry.
"""
from __future__ import annotations

import platform
import time
import uuid
from pathlib import Path

import pytest

from loopcoder.runtime import dockerfile as dfmod
from loopcoder.runtime.config import SandboxConfig, load_runtime_config
from loopcoder.runtime.errors import ImageBuildError

UNPULLABLE = "registry.invalid/loopcoder-test/python:3.11-slim"


# -- the Dockerfile reader (no engine) -------------------------------------------------------------


def test_from_lines_expand_meta_args_and_know_stages():
    text = (
        "# escape=`\n"
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=python:3.11\n"
        'ARG VARIANT="slim"\n'
        "ARG REG\n"
        "FROM --platform=$BUILDPLATFORM ${BASE}-${VARIANT} AS Build\n"
        "RUN echo a `\n"
        "  # a comment inside the instruction\n"
        "\n"
        "  && echo b\n"
        "FROM `\n"
        "    build AS final\n"
        "FROM ${REG:-docker.io}/library/debian:${TAG:+never}bookworm\n"
        "COPY --from=build /a /a\n"
        "COPY --from=1 /a /a\n"
        "COPY --chown=1:1 --from=ghcr.io/x/y:1 /b /b\n"
        "FROM scratch\n"
    )
    df = dfmod.parse(text, {"VARIANT": "bookworm"})
    assert [(s.resolved, s.name, s.platform, s.from_stage, s.external) for s in df.stages] == [
        ("python:3.11-bookworm", "Build", "$BUILDPLATFORM", False, True),
        ("build", "final", None, True, False),
        ("docker.io/library/debian:bookworm", None, None, False, True),
        ("scratch", None, None, False, False),
    ]
    assert [ins.keyword for ins in df.instructions].count("RUN") == 1
    assert df.instructions[4].args == "echo a   && echo b"  # continuation joined, comment line dropped
    assert [ref for _, ref in df.copy_from] == ["ghcr.io/x/y:1"]
    assert df.meta_args == {"BASE": "python:3.11", "VARIANT": "bookworm"}
    rewritten = dfmod.rewrite(df, {0: "loopcoder/env:x"}, {0})
    lines = rewritten.splitlines()
    assert lines[5] == "FROM loopcoder/env:x AS Build"
    assert lines[:5] == text.splitlines()[:5] and lines[6:] == text.splitlines()[6:]


@pytest.mark.parametrize("ref,address", [
    ("python:3.11", ("registry-1.docker.io", 443)),
    ("library/python", ("registry-1.docker.io", 443)),
    ("docker.io/library/python", ("registry-1.docker.io", 443)),
    ("ghcr.io/owner/img:1", ("ghcr.io", 443)),
    ("localhost:5000/img", ("localhost", 5000)),
    ("registry.invalid/x@sha256:" + "0" * 64, ("registry.invalid", 443)),
])
def test_registry_address(ref, address):
    assert dfmod.registry_address(ref) == address


# -- real builds -----------------------------------------------------------------------------------


@pytest.fixture
def scratch_tags(docker_client):
    tags: list[str] = []
    yield tags
    for tag in tags:
        try:
            docker_client.api.remove_image(tag, force=True)
        except Exception:
            pass


def images_config():
    return load_runtime_config().images.model_copy(update={"build_repository": "loopcoder/build-test",
                                                           "env_repository": "loopcoder/env-test"})


def task_context(root: Path) -> Path:
    ctx = root / "task"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"ARG BASE={UNPULLABLE}\n"
        "FROM --platform=$BUILDPLATFORM ${BASE} AS build\n"
        "ARG TARGETARCH\n"
        'RUN echo "arch=$TARGETARCH" > /built.txt\n'
        "FROM build AS final\n"
        "WORKDIR /app\n"
        "COPY . /app/ctx\n"
        "COPY --from=build /built.txt /app/built.txt\n"
        "RUN cp /app/ctx/data.txt /app/data-copy.txt && chmod 755 /app/ctx/run.sh\n"
    )
    (ctx / "data.txt").write_text("context data\n")
    (ctx / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (ctx / "ignored.txt").write_text("must not be sent\n")
    (ctx / "logs").mkdir()
    (ctx / "logs" / "big.log").write_text("x\n")
    (ctx / ".dockerignore").write_text("# comment\nignored.txt\nlogs\n")
    return ctx


@pytest.mark.docker
def test_dockerfile_on_an_unpullable_image_builds_on_the_offline_base(docker_client, base_image, scratch_tags,
                                                                       tmp_path):
    from loopcoder.runtime.docker_sandbox import DockerSandbox
    from loopcoder.runtime.images import build_dockerfile_image

    ctx = task_context(tmp_path)
    cfg = images_config()
    lines: list[str] = []
    started = time.monotonic()
    first = build_dockerfile_image(docker_client, ctx, cfg, progress=lines.append)
    scratch_tags += [first.tag, *first.substituted.values()]
    assert time.monotonic() - started < 120  # no hanging on the unreachable registry
    assert not first.reused and first.tag == f"loopcoder/build-test:{first.content_hash[:20]}"
    assert list(first.substituted) == [UNPULLABLE]
    assert len(first.warnings) == 1 and UNPULLABLE in first.warnings[0] and "loopcoder/base:bookworm" in first.warnings[0]
    assert any(line.startswith("warning: FROM " + UNPULLABLE) for line in lines)
    assert any("Step" in line for line in lines)  # the engine's progress was streamed

    ws = tmp_path / "ws"
    ws.mkdir()
    with DockerSandbox(ws, config=SandboxConfig(memory="256m"), image=first.tag, client=docker_client) as sb:
        res = sb.exec("cd /app && cat built.txt data-copy.txt && ls -A ctx && ctx/run.sh")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    assert res.output == f"arch={arch}\ncontext data\n.dockerignore\nDockerfile\ndata.txt\nrun.sh\nran\n"

    started = time.monotonic()
    again = build_dockerfile_image(docker_client, ctx, cfg)
    assert again.reused and again.tag == first.tag and again.image_id == first.image_id
    assert time.monotonic() - started < 5 and UNPULLABLE in again.warnings[0]

    (ctx / "ignored.txt").write_text("changed, but ignored\n")  # .dockerignore'd: same image
    assert build_dockerfile_image(docker_client, ctx, cfg).tag == first.tag
    (ctx / "data.txt").write_text("changed context data\n")
    changed = build_dockerfile_image(docker_client, ctx, cfg)
    scratch_tags.append(changed.tag)
    assert not changed.reused and changed.tag != first.tag
    other_args = build_dockerfile_image(docker_client, ctx, cfg, build_args={"UNUSED": "1"})
    scratch_tags.append(other_args.tag)
    assert other_args.tag not in (first.tag, changed.tag)


@pytest.mark.docker
def test_dockerfile_errors_are_one_line(docker_client, base_image, scratch_tags, tmp_path):
    from loopcoder.runtime.images import build_dockerfile_image

    cfg = images_config()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nRUNN echo hi\n")
    with pytest.raises(ImageBuildError, match="unknown instruction: RUNN") as e:
        build_dockerfile_image(docker_client, ctx, cfg)
    assert "\n" not in str(e.value)

    marker = uuid.uuid4().hex
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo {marker} > /step-one\n"
                                    "RUN echo 'ERROR: the real reason' && echo more && exit 3\n")
    with pytest.raises(ImageBuildError, match="first error line: ERROR: the real reason") as e:
        build_dockerfile_image(docker_client, ctx, cfg)
    assert "returned a non-zero code: 3" in str(e.value) and "\n" not in str(e.value)
    # The step that worked left no untagged image behind.
    for image in docker_client.api.images(all=True, filters={"dangling": True}):
        history = docker_client.api.history(image["Id"])
        assert not any(marker in (layer.get("CreatedBy") or "") for layer in history)

    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY --from={UNPULLABLE} /x /x\n")
    started = time.monotonic()
    with pytest.raises(ImageBuildError, match=r"COPY --from=registry.invalid/.* cannot be replaced"):
        build_dockerfile_image(docker_client, ctx, cfg)
    assert time.monotonic() - started < 15

    with pytest.raises(ImageBuildError, match="no Dockerfile at"):
        build_dockerfile_image(docker_client, ctx, cfg, dockerfile="missing/Dockerfile")


@pytest.mark.docker
def test_unreachable_registry_is_decided_within_the_probe_timeout(docker_client):
    from loopcoder.runtime.images import image_available

    cfg = load_runtime_config().images.model_copy(update={"pull_probe_timeout_s": 0.5})
    started = time.monotonic()
    ok, why = image_available(docker_client, UNPULLABLE, cfg)
    assert not ok and "registry.invalid:443 is unreachable" in why and time.monotonic() - started < 2
    # 10.255.255.1 is routed nowhere: the connect fails, hangs until the probe timeout, or (behind a
    # transparent proxy, as here) succeeds and the engine's pull fails. Either way: decided, quickly.
    started = time.monotonic()
    ok, why = image_available(docker_client, "10.255.255.1:5000/img:1", cfg)
    assert not ok and ("unreachable" in why or "pull failed" in why) and time.monotonic() - started < 10
    assert image_available(docker_client, cfg.base_image, cfg) == (True, "")
