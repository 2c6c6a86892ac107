"""Fixtures of the agent tests: scripted model servers on loopback, git repositories with a bug, Docker sandboxes.

The scripted model (scripted_server.py) is a real HTTP server the agent reaches through the openai SDK;
nothing in these tests replaces the client, the tools, git or the sandbox.
"""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
def repo(tmp_path):
    """The demo repository (stats.py, a wrong median for even lengths, unittest tests) as a fresh git repo."""
    from loopcoder.scenarios.demo import make_demo_repo

    return make_demo_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def docker_client():
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.runtime.errors import DockerUnavailableError
    from loopcoder.runtime.images import base_image_exists

    try:
        client = connect_docker(timeout=60)
    except DockerUnavailableError as exc:
        unavailable(str(exc))
    tag = load_runtime_config().images.base_image
    if not base_image_exists(client, tag):
        unavailable(f"sandbox base image {tag} missing; build it with `loopcoder sandbox build-base`")
    return client


@pytest.fixture
def open_sandbox(docker_client):
    """open_sandbox(workspace) -> a DockerSandbox on it (closed after the test)."""
    from loopcoder.runtime.config import SandboxConfig, load_runtime_config
    from loopcoder.runtime.docker_sandbox import DockerSandbox

    opened = []
    tag = load_runtime_config().images.base_image

    def start(workspace):
        config = SandboxConfig(cpus=1.0, memory="512m", pids_limit=128, default_timeout_s=120)
        sb = DockerSandbox(workspace, config=config, image=tag, client=docker_client,
                           labels={"loopcoder.purpose": "test"})
        opened.append(sb)
        return sb

    yield start
    for sb in opened:
        sb.close()


def unavailable(reason: str):
    if IN_CI:  # same policy as tests/runtime: CI provides Docker, so a missing engine is a failure there
        pytest.fail(f"{reason} -- CI=true, so Docker tests fail instead of skipping")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_native_server(tmp_path_factory):
    """The native server (real engine, uvicorn on a free loopback port) on a random tiny checkpoint."""
    from loopcoder.model_server.api import ServerThread, create_app
    from loopcoder.model_server.engine import AsyncLLMEngine, EngineConfig
    from loopcoder.model_server.plt.checkpoint import init_checkpoint

    path = init_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny")
    engine = AsyncLLMEngine.from_config(EngineConfig(model=str(path), max_model_len=4096, max_num_seqs=4))
    server = ServerThread(create_app(engine, served_model_name="tiny")).start()
    yield server
    server.stop()
