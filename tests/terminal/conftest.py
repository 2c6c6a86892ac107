"""Fixtures of the terminal-task tests: Docker engine and base image (fail in CI, skip elsewhere), the scripted
model server of the agent tests (a real HTTP server on 127.0.0.1), task folders made for one test."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))  # scripted_server.py

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
from terminal_support import BUNDLED  # noqa: E402


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
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.images import base_image_exists

    tag = load_runtime_config().images.base_image
    if not base_image_exists(docker_client, tag):
        docker_unavailable(f"sandbox base image {tag} missing; build it with `loopcoder sandbox build-base`")
    return tag


@pytest.fixture
def scripted():
    """scripted(script, **kwargs) -> a started ScriptedServer, stopped after the test."""
    from scripted_server import ScriptedServer

    servers = []

    def start(script=None, **kwargs):
        server = ScriptedServer(script, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def task_copy(tmp_path):
    """task_copy(name, new_name=None) -> a private copy of a bundled task folder (to change for one test)."""

    def copy(name: str, new_name: str | None = None) -> Path:
        dest = tmp_path / "tasks" / (new_name or name)
        shutil.copytree(BUNDLED / name, dest)
        return dest

    return copy
