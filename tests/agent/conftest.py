"""Fixtures of the agent tests: scripted model servers on loopback, git repositories with a bug, Docker sandboxes.

The scripted model (scripted_server.py) is a real HTTP server the agent reaches through the openai SDK;
nothing in these tests replaces the client, the tools, git or the sandbox.
"""
from __future__ import annotations


import pytest

@pytest.fixture
def repo(tmp_path):
    """The demo repository (stats.py, a wrong median for even lengths, unittest tests) as a fresh git repo."""
    from loopcoder.scenarios.demo import make_demo_repo

    return make_demo_repo(tmp_path / "repo")


@pytest.fixture
def open_sandbox(docker_ready):
    """open_sandbox(workspace) -> a DockerSandbox on it (closed after the test)."""
    from loopcoder.runtime.config import SandboxConfig, load_runtime_config
    from loopcoder.runtime.docker_sandbox import DockerSandbox

    opened = []
    tag = load_runtime_config().images.base_image

    def start(workspace):
        config = SandboxConfig(cpus=1.0, memory="512m", pids_limit=128, default_timeout_s=120)
        sb = DockerSandbox(workspace, config=config, image=tag, client=docker_ready,
                           labels={"loopcoder.purpose": "test"})
        opened.append(sb)
        return sb

    yield start
    for sb in opened:
        sb.close()


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
