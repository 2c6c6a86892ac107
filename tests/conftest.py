"""Fixtures shared by every test folder: the Docker engine and base image (a failure in CI, a skip elsewhere)
and the scripted model server of tests/agent/scripted_server.py (a real HTTP server on 127.0.0.1)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "agent"))  # scripted_server.py

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
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.images import base_image_exists

    tag = load_runtime_config().images.base_image
    if not base_image_exists(docker_client, tag):
        docker_unavailable(f"sandbox base image {tag} missing; build it with `loopcoder sandbox build-base`")
    return tag


@pytest.fixture(scope="session")
def docker_ready(docker_client, base_image):
    """The Docker client, once the sandbox base image is known to exist."""
    return docker_client


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
