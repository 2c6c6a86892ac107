"""Fixtures of the resolve tests: a fake GitHub on loopback serving the demo repository, a scripted model
server (tests/agent/scripted_server.py), Docker for the end-to-end runs, and an environment with no real
GitHub credentials in reach."""
from __future__ import annotations

import secrets

import pytest

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


