"""Credentials for host git: a private repository clones with the token through GIT_ASKPASS, and the token is
on no command line, in no git config or file of the clone, and given to no other host."""
import os
import subprocess
import sys
import time

import pytest

from loopcoder.runtime.errors import WorkspaceError
from loopcoder.runtime.workspace import GitWorkspace
from loopcoder.scenarios.demo import make_demo_repo
from loopcoder.scenarios.resolve.gitauth import git_credentials
from loopcoder.scenarios.resolve.token import Token

from resolve_support import files_holding


@pytest.fixture
def private(github, tmp_path):
    github.add_repo("octo", "secret", make_demo_repo(tmp_path / "s2"), private=True, readers=("you",))
    return f"{github.url}/octo/secret.git"


def test_a_private_repository_clones_with_the_token_and_keeps_none_of_it(github, private, tmp_path, token):
    with git_credentials(Token(token, "T"), private) as env:
        ws = GitWorkspace.clone(private, tmp_path / "out" / "ws", env=env)
        helper = env["GIT_ASKPASS"]
        assert token not in open(helper).read()  # the helper is a fixed script; the token is in its environment
    assert not os.path.exists(helper)  # removed after use
    assert (ws.path / "stats.py").is_file()
    assert files_holding(tmp_path / "out", token) == []  # tree, its .git, the private repository
    git_requests = [r for r in github.records if r.kind == "git"]
    assert [r.user for r in git_requests[:2]] == [None, "you"]  # the token only after the server's challenge
    assert github.scans >= 2 and github.scan_hits == []  # no process had the token in its command line


def test_without_a_token_the_clone_fails_in_one_line(github, private, tmp_path):
    with pytest.raises(WorkspaceError) as err:
        GitWorkspace.clone(private, tmp_path / "ws")
    assert "could not read Username" in str(err.value) and "\n" not in str(err.value)


def test_the_process_scan_does_find_a_token_on_a_command_line(github, token, tmp_path):
    """The check above can fail: a process with the token among its arguments is reported."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", token])
    try:
        time.sleep(0.2)
        subprocess.run(["git", "ls-remote", f"{github.url}/octo/stats.git"], capture_output=True, check=True)
    finally:
        proc.kill()
        proc.wait()
    assert any(f"pid {proc.pid}:" in hit and "<SECRET>" in hit for hit in github.scan_hits)


@pytest.mark.parametrize("prompt", [
    "Password for 'http://x-access-token@evil.example': ",
    "Username for 'https://evil.example': ",
    "Password for 'http://someone@127.0.0.1:1': ",
    "Are you sure you want to continue connecting (yes/no)? ",
])
def test_the_helper_answers_only_prompts_for_the_expected_host(prompt, token):
    with git_credentials(Token(token, "T"), "http://127.0.0.1:1/octo/stats.git") as env:
        proc = subprocess.run([env["GIT_ASKPASS"], prompt], env={**os.environ, **env}, capture_output=True,
                              text=True)
        good = subprocess.run([env["GIT_ASKPASS"], "Password for 'http://x-access-token@127.0.0.1:1': "],
                              env={**os.environ, **env}, capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stdout == ""
    assert good.stdout == token + "\n"


def test_no_token_means_no_helper():
    with git_credentials(None, "https://github.com/o/r.git") as env:
        assert env == {}


def test_clone_through_git_url_and_never_with_the_token_to_a_host_the_api_named(github, private, tmp_path, token):
    """The API's clone_url may name another host; the token goes only to the issue's, the API's or --git-url's."""
    from loopcoder.scenarios.resolve.errors import ResolveError
    from loopcoder.scenarios.resolve.fake_github import FakeGitHub
    from loopcoder.scenarios.resolve.github import GitHubClient
    from loopcoder.scenarios.resolve.run import clone
    from loopcoder.scenarios.resolve.urls import host_of, parse_issue_url

    ref = parse_issue_url(github.issue_url("octo", "secret", 1))
    tok = Token(token, "GITHUB_ENTERPRISE_TOKEN")
    allowed = {ref.host}
    with FakeGitHub(tmp_path / "other") as other:  # another host:port, holding the same private repository
        other.add_user("you", token)
        other.add_repo("octo", "secret", github.repo("octo/secret").path, private=True, readers=("you",))
        github.clone_url_base = other.url
        with GitHubClient(github.api_url, tok) as gh:
            repo = gh.repository("octo", "secret")
        assert host_of(repo.clone_url) == host_of(other.url)
        with pytest.raises(ResolveError) as err:
            clone(ref, repo, tok, tmp_path / "a", None, None, allowed)
        assert f"the token is only given to {ref.host}, not to {host_of(other.url)}: pass --git-url" in str(err.value)
        assert [r.user for r in other.records] == [None]  # challenged, and given nothing
        ws, source = clone(ref, repo, tok, tmp_path / "b", None, github.url, allowed | {host_of(github.url)})
        assert source == f"{github.url}/octo/secret.git" and (ws.path / "stats.py").is_file()


def test_repo_dir_with_another_origin_is_warned_about(github, tmp_path):
    from loopcoder.scenarios.resolve.github import GitHubClient
    from loopcoder.scenarios.resolve.run import clone
    from loopcoder.scenarios.resolve.urls import parse_issue_url

    local = make_demo_repo(tmp_path / "mine")
    subprocess.run(["git", "remote", "add", "origin", "https://me:pw@example.com/someone/else.git"], cwd=local,
                   check=True)
    ref = parse_issue_url(github.issue_url("octo", "stats", 1))
    with GitHubClient(github.api_url, None) as gh:
        repo = gh.repository("octo", "stats")
    said = []
    ws, source = clone(ref, repo, None, tmp_path / "out", local, None, {ref.host}, said.append)
    assert said == ["warning: --repo-dir's origin is https://example.com/someone/else.git, not octo/stats"]
    assert source == str(local) and ws.base_commit
