"""Fixtures for runtime tests: a Docker engine and base image (fail in CI, skip locally), git helpers."""
from __future__ import annotations

from pathlib import Path

import pytest

from loopcoder.runtime.config import SandboxConfig
from git_support import git  # noqa: F401  (re-exported for fixtures)

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
