"""Fixtures for runtime tests: a Docker engine and base image (fail in CI, skip locally), git helpers."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from loopcoder.runtime.config import SandboxConfig, load_runtime_config
from git_support import git  # noqa: F401  (re-exported for fixtures)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker_unavailable(reason: str):
    """In CI a missing engine or image is a failure (.ci/docker-up.sh should have provided it)."""
    if IN_CI:
        pytest.fail(f"{reason} -- CI=true, so Docker tests fail instead of skipping (see .ci/docker-up.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.runtime.errors import DockerUnavailableError

    try:
        return connect_docker(timeout=60)
    except DockerUnavailableError as exc:
        docker_unavailable(str(exc))


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    from loopcoder.runtime.images import base_image_exists

    tag = load_runtime_config().images.base_image
    if not base_image_exists(docker_client, tag):
        docker_unavailable(f"sandbox base image {tag} missing; build it with `loopcoder sandbox build-base`")
    return tag


@pytest.fixture
def small_config() -> SandboxConfig:
    """Tight limits so resource tests finish fast on a 2-core machine."""
    return SandboxConfig(cpus=1.0, memory="256m", pids_limit=128, output_limit_bytes=20_000, default_timeout_s=60)


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def sandbox(docker_client, base_image, workspace, small_config):
    from loopcoder.runtime.docker_sandbox import DockerSandbox

    with DockerSandbox(workspace, config=small_config, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}) as sb:
        yield sb
