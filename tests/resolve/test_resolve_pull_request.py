"""--open-pr without the agent: the saved patch becomes a commit on a new branch, pushed to the repository or,
when that push is refused, to the user's fork (created when missing), and a draft pull request on the fake
GitHub. Refusals are one line; the token is in no message and on no command line."""
import subprocess

import pytest

from loopcoder.runtime.workspace import GitWorkspace
from loopcoder.scenarios.resolve.config import PullRequestSettings
from loopcoder.scenarios.resolve.errors import PullRequestError
from loopcoder.scenarios.resolve.github import GitHubClient
from loopcoder.scenarios.resolve.gitauth import git_credentials
from loopcoder.scenarios.resolve.pullrequest import check_can_open, open_pull_request, pull_request_body
from loopcoder.scenarios.resolve.token import Token
from loopcoder.scenarios.resolve.urls import parse_issue_url

from resolve_support import FIX_NEW, FIX_OLD

SETTINGS = PullRequestSettings(fork_wait_s=5)


def fixed_workspace(github, tmp_path, token):
    """A clone of octo/stats from the fake with the median fix in its tree; (workspace, patch)."""
    url = f"{github.url}/octo/stats.git"
    with git_credentials(Token(token, "T"), url) as env:
        ws = GitWorkspace.clone(url, tmp_path / "ws", env=env)
    stats = ws.path / "stats.py"
    stats.write_text(stats.read_text().replace(FIX_OLD, FIX_NEW))
    return ws, ws.extract_patch().text


def open_pr(github, tmp_path, token, settings=SETTINGS):
    ref = parse_issue_url(github.issue_url("octo", "stats", 1))
    ws, patch = fixed_workspace(github, tmp_path, token)
    tok = Token(token, "GITHUB_ENTERPRISE_TOKEN")
    lines = []
    with GitHubClient(github.api_url, tok) as gh:
        repo, issue = gh.repository("octo", "stats"), gh.issue("octo", "stats", 1)
        body = pull_request_body("## summary\n\nwhat and why", issue, settings.max_body_chars)
        opened = open_pull_request(gh, ws, repo, issue, ref, patch, body, tok, settings, None, lines.append)
    return opened, patch, lines


def git(path, *args):
    return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True).stdout


def test_a_user_who_may_push_gets_a_branch_on_the_repository(github, tmp_path, token):
    github.repo("octo/stats").pushers.add("you")
    opened, patch, _ = open_pr(github, tmp_path, token)
    upstream = github.repo("octo/stats")
    [pr] = upstream.pulls
    assert opened.pushed_to == "octo/stats" and not opened.fork_created
    assert opened.branch.startswith("loopcoder/issue-1-") and pr["head"]["label"] == f"octo:{opened.branch}"
    assert pr["draft"] is True and pr["base"]["ref"] == "master" and pr["title"] == (
        "Fix #1: median() is wrong for even-length lists")
    assert pr["body"] == "## summary\n\nwhat and why\n\nFixes #1\n"
    # the pushed commit is exactly the patch, on the base commit, by the token's user (noreply address)
    assert git(upstream.path, "rev-parse", f"refs/heads/{opened.branch}").strip() == opened.commit
    assert git(upstream.path, "diff", f"{opened.commit}^", opened.commit, "--full-index", "--src-prefix=a/",
               "--dst-prefix=b/") == patch
    author = git(upstream.path, "log", "-1", "--format=%an <%ae>|%s|%b", opened.commit)
    assert author.startswith("You <1001+you@users.noreply.github.com>|Fix #1: median()")
    assert "Fixes #1" in author
    assert not [r for r in github.records if r.kind == "git" and "/you/" in r.path]  # no fork involved


def test_a_refused_push_falls_back_to_a_new_fork_then_reuses_it(github, tmp_path, token):
    opened, patch, lines = open_pr(github, tmp_path, token)
    assert opened.pushed_to == "you/stats" and opened.fork_created
    [pr] = github.repo("octo/stats").pulls
    assert pr["head"]["label"] == f"you:{opened.branch}" and pr["head"]["repo"]["full_name"] == "you/stats"
    assert pr["draft"] is True and "Fixes #1" in pr["body"]
    assert not subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{opened.branch}"],
                              cwd=github.repo("octo/stats").path, capture_output=True).stdout  # not upstream
    assert any("octo/stats refused the push (Permission to octo/stats.git denied to you." in l for l in lines)
    # a second run finds the fork instead of creating another one
    again, _, _ = open_pr(github, tmp_path / "again", token)
    assert again.pushed_to == "you/stats" and not again.fork_created
    assert sum(1 for r in github.repos.values() if r.parent == "octo/stats") == 1
    assert len(github.repo("octo/stats").pulls) == 2


def test_when_the_fork_refuses_too_it_is_one_line_naming_both(github, tmp_path):
    readonly = "ghp_readonly_" + "9" * 20
    github.add_user("reader", readonly, can_write=False)  # a token without write scope: every push refused
    with pytest.raises(PullRequestError) as err:
        open_pr(github, tmp_path, readonly)
    message = str(err.value)
    assert message.startswith("octo/stats refused the push (Permission to octo/stats.git denied to reader.")
    assert "and so did your fork reader/stats (Permission to reader/stats.git denied to reader." in message
    assert readonly not in message and "\n" not in message
    assert github.repo("octo/stats").pulls == []


def test_a_repository_that_cannot_be_forked(github, tmp_path, token):
    github.repo("octo/stats").allow_forking = False
    with pytest.raises(PullRequestError, match=r"and no fork could be used: fork of octo/stats: access refused "
                                               r"\(403 Forking is disabled for this repository\)"):
        open_pr(github, tmp_path, token)


def test_a_refused_pull_request_still_names_the_pushed_branch(github, tmp_path, token):
    github.repo("octo/stats").pushers.add("you")
    github.repo("octo/stats").allow_drafts = False
    with pytest.raises(PullRequestError, match=r"pushed loopcoder/issue-1-\w+ to octo/stats, but the pull request "
                                               r"was refused: .*Draft pull requests are not supported"):
        open_pr(github, tmp_path, token)


def test_the_owner_whose_push_is_refused_has_no_fork_to_fall_back_to(github, tmp_path):
    owner_token = next(u.token for u in github.users.values() if u.login == "octo")
    github.users[owner_token].can_write = False
    with pytest.raises(PullRequestError, match="it is your own repository, so there is no fork"):
        open_pr(github, tmp_path, owner_token)


def test_open_pr_needs_an_open_unlocked_issue_and_a_token(github, token):
    ref = parse_issue_url(github.issue_url("octo", "stats", 1))
    with GitHubClient(github.api_url, None) as gh:
        issue = gh.issue("octo", "stats", 1)
    check_can_open(issue, ref, Token(token, "T"))
    issue.locked = True
    with pytest.raises(PullRequestError, match=r"issue octo/stats#1 is locked; --open-pr needs an unlocked issue"):
        check_can_open(issue, ref, Token(token, "T"))
    issue.locked, issue.state = False, "closed"
    with pytest.raises(PullRequestError, match=r"issue octo/stats#1 is closed; --open-pr needs an open issue"):
        check_can_open(issue, ref, Token(token, "T"))
    issue.state = "open"
    with pytest.raises(PullRequestError, match=r"--open-pr needs a token .*: set GITHUB_ENTERPRISE_TOKEN for 127"):
        check_can_open(issue, ref, None)


def test_the_body_is_capped_below_githubs_limit():
    from loopcoder.scenarios.resolve.github import Issue

    body = pull_request_body("x" * 70000, Issue(3, "t", "", "open", False, "a", ""), 60000)
    assert len(body) <= 60000 and body.endswith("[... summary cut to fit ...]\n\nFixes #3\n")
