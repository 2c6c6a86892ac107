"""Fixtures of the resolve tests: a fake GitHub on loopback serving the demo repository, a scripted model
server (tests/agent/scripted_server.py), Docker for the end-to-end runs, and an environment with no real
GitHub credentials in reach."""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))  # scripted_server.py lives there

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TOKEN_VARS = ("GH_TOKEN", "GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN", "GITHUB_SERVER_URL",
              "GH_HOST", "GH_CONFIG_DIR", "XDG_CONFIG_HOME")


@pytest.fixture(autouse=True)
def no_real_credentials(monkeypatch, tmp_path_factory):
    """No token of this machine can leak into a test, and gh's config is an empty folder of ours."""
    for name in TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GH_CONFIG_DIR", str(tmp_path_factory.mktemp("gh-config")))


@pytest.fixture
def token() -> str:
    return "ghp_" + secrets.token_hex(18)


@pytest.fixture
def github(tmp_path, token):
    """A started FakeGitHub: user "octo" owns octo/stats (the demo repository), user "you" holds ``token``
    and may not push there; issue #1 has three comments."""
    from loopcoder.scenarios.demo import make_demo_repo
    from loopcoder.scenarios.resolve.fake_github import FakeGitHub

    from resolve_support import COMMENTS, ISSUE_BODY, ISSUE_TITLE

    source = make_demo_repo(tmp_path / "source")
    gh = FakeGitHub(tmp_path / "github", scan_for=token)
    gh.add_user("octo", "ghp_owner_" + secrets.token_hex(8))
    gh.add_user("you", token)
    gh.add_repo("octo", "stats", source)
    gh.add_issue("octo", "stats", ISSUE_TITLE, ISSUE_BODY, author="reporter", comments=COMMENTS,
                 labels=("bug",))
    with gh:
        yield gh


@pytest.fixture
def scripted():
    from scripted_server import ScriptedServer

    servers = []

    def start(script=None, **kwargs):
        server = ScriptedServer(script, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def docker_ready():
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.runtime.errors import DockerUnavailableError
    from loopcoder.runtime.images import base_image_exists

    try:
        client = connect_docker(timeout=60)
    except DockerUnavailableError as exc:
        _unavailable(str(exc))
    tag = load_runtime_config().images.base_image
    if not base_image_exists(client, tag):
        _unavailable(f"sandbox base image {tag} missing; build it with `loopcoder sandbox build-base`")
    return client


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} -- CI=true, so Docker tests fail instead of skipping")
    pytest.skip(reason)
