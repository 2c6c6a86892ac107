"""--open-pr: the saved patch as a commit on a new branch, pushed to the repository or to the user's fork, and a
draft pull request whose body is the summary.

The commit is made from the patch text in the workspace's host-private repository (a temporary index over
the base commit), never from the tree or its sandbox-writable ``.git``: what is pushed is exactly
``patch.diff``. Pushes go to an explicit URL through ``hostgit.run_git`` (pinned environment, no hooks) with
the credentials of ``gitauth``. A push refused with 403 ("Permission ... denied") falls back to the user's
fork (found, or created through the API and waited for); anything else is a one-line PullRequestError.
"""
from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from loopcoder.runtime.hostgit import HostGitError, git_out, last_line, redact, run_git
from loopcoder.runtime.workspace import GitWorkspace
from loopcoder.scenarios.resolve.config import PullRequestSettings
from loopcoder.scenarios.resolve.errors import GitHubError, PullRequestError
from loopcoder.scenarios.resolve.github import GitHubClient, Issue, PullRequest, Repository, User
from loopcoder.scenarios.resolve.gitauth import git_credentials
from loopcoder.scenarios.resolve.token import Token

_REFUSED = re.compile(r"\b403\b|denied|permission|protected branch|not allowed|forbidden", re.I)
_AUTH = re.compile(r"\b401\b|authentication failed|could not read (username|password)|invalid username", re.I)
_MISSING = re.compile(r"\b404\b|not found|does not appear to be a git repository", re.I)


@dataclass
class PushOutcome:
    ok: bool
    kind: str  # ok | refused | auth | missing | error
    message: str


@dataclass
class OpenedPullRequest:
    pull: PullRequest
    branch: str
    commit: str
    pushed_to: str  # full name of the repository that holds the branch
    fork_created: bool


def check_can_open(issue: Issue, ref, token: Optional[Token]) -> None:
    """Before the agent runs: --open-pr needs an open, unlocked issue and a token."""
    if issue.state != "open":
        raise PullRequestError(f"issue {ref.full_name}#{ref.number} is {issue.state}; --open-pr needs an open "
                               "issue (run without --open-pr to get the patch only)")
    if issue.locked:
        raise PullRequestError(f"issue {ref.full_name}#{ref.number} is locked; --open-pr needs an unlocked issue "
                               "(run without --open-pr to get the patch only)")
    if token is None:
        from loopcoder.scenarios.resolve.token import token_hint

        raise PullRequestError(f"--open-pr needs a token that may push and open pull requests: {token_hint(ref.host)}")


def commit_patch(ws: GitWorkspace, patch: str, message: str, author: tuple[str, str]) -> str:
    """A commit of ``patch`` on the base commit, in the private repository; its sha."""
    name, email = author
    with tempfile.TemporaryDirectory(prefix="loopcoder-commit-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
               "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
        try:
            run_git(["read-tree", ws.base_commit], git_dir=ws.git_dir, env=env)
            run_git(["apply", "--cached", "--whitespace=nowarn", "-"], git_dir=ws.git_dir, env=env,
                    input=patch.encode("utf-8", "surrogateescape"))
            tree = git_out(["write-tree"], git_dir=ws.git_dir, env=env).strip()
            return git_out(["commit-tree", tree, "-p", ws.base_commit, "-F", "-"], git_dir=ws.git_dir, env=env,
                           input=message.encode()).strip()
        except HostGitError as exc:
            raise PullRequestError(f"cannot commit the patch: {last_line(exc.stderr)}") from None


def push(ws: GitWorkspace, url: str, sha: str, branch: str, token: Optional[Token], timeout: float,
         allowed_hosts: Optional[set[str]] = None) -> PushOutcome:
    """``git push URL SHA:refs/heads/BRANCH`` from the private repository, credentials through GIT_ASKPASS
    (only to ``allowed_hosts`` when given)."""
    with git_credentials(token, url, allowed_hosts) as env:
        proc = run_git(["push", "--no-verify", "--quiet", url, f"{sha}:refs/heads/{branch}"], git_dir=ws.git_dir,
                       env=env, check=False, timeout=timeout)
    if proc.returncode == 0:
        return PushOutcome(True, "ok", "")
    text = scrub(proc.stderr.decode("utf-8", "replace"), token, url)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    remote = [ln.removeprefix("remote:").strip() for ln in lines if ln.startswith("remote:")]
    message = "; ".join(remote[:2] + [last_line(text)]) if remote else last_line(text)
    kind = "refused" if _REFUSED.search(text) else "auth" if _AUTH.search(text) else \
        "missing" if _MISSING.search(text) else "error"
    return PushOutcome(False, kind, message[:300])


def scrub(text: str, token: Optional[Token], *urls: str) -> str:
    """``text`` without credentials: URL user-info, and the token itself wherever it appears."""
    text = redact(text, *urls)
    return text.replace(token.value, "***") if token is not None and token.value else text


def open_pull_request(gh: GitHubClient, ws: GitWorkspace, repo: Repository, issue: Issue, ref, patch: str,
                      body: str, token: Token, settings: PullRequestSettings, git_url: Optional[str],
                      say: Callable[[str], None] = lambda line: None,
                      allowed_hosts: Optional[set[str]] = None) -> OpenedPullRequest:
    """Commit, push (repository, else fork), open the draft pull request; PullRequestError with one line.

    ``allowed_hosts``: git hosts the token may be given to (the issue's, the API's, --git-url's).
    """
    try:
        user = gh.user()
    except GitHubError as exc:
        raise PullRequestError(f"cannot tell whose token this is: {exc}") from None
    title = settings.title.format(number=issue.number, title=issue.title.strip())[:250]
    message = f"{title}\n\nFixes #{issue.number}\n\n{issue.html_url or ref.url}\n"
    sha = commit_patch(ws, patch, message, (user.name or user.login, user.noreply_email))
    branch = f"{settings.branch_prefix}{issue.number}-{sha[:8]}"
    upstream_url = _clone_url(repo, git_url)
    say(f"pushing {branch} to {repo.full_name}")
    first = push(ws, upstream_url, sha, branch, token, settings.push_timeout_s, allowed_hosts)
    head_repo, fork_created = repo, False
    if not first.ok:
        if first.kind == "auth":
            raise PullRequestError(f"the git server rejected the {token.source} token while pushing to "
                                   f"{repo.full_name}: {first.message}")
        if first.kind != "refused":
            raise PullRequestError(f"cannot push to {repo.full_name}: {first.message}")
        if user.login.lower() == repo.owner.lower():
            raise PullRequestError(f"{repo.full_name} refused the push ({first.message}) and it is your own "
                                   "repository, so there is no fork to fall back to")
        say(f"{repo.full_name} refused the push ({first.message}); trying your fork")
        head_repo, fork_created = _fork(gh, repo, user, first)
        second = _push_to_fork(ws, head_repo, git_url, sha, branch, token, settings, fork_created, say,
                               allowed_hosts)
        if not second.ok:
            raise PullRequestError(f"{repo.full_name} refused the push ({first.message}) and so did your fork "
                                   f"{head_repo.full_name} ({second.message})")
    head = branch if head_repo is repo else f"{head_repo.owner}:{branch}"
    try:
        pull = gh.create_pull(repo.owner, repo.name, title, head, repo.default_branch, body, draft=True)
    except GitHubError as exc:
        raise PullRequestError(f"pushed {branch} to {head_repo.full_name}, but the pull request was refused: "
                               f"{exc}") from None
    return OpenedPullRequest(pull=pull, branch=branch, commit=sha, pushed_to=head_repo.full_name,
                             fork_created=fork_created)


def pull_request_body(summary: str, issue: Issue, max_chars: int) -> str:
    """The summary and the issue link; capped below GitHub's body limit."""
    tail = f"\n\nFixes #{issue.number}\n"
    if len(summary) + len(tail) > max_chars:
        summary = summary[: max_chars - len(tail) - 40] + "\n\n[... summary cut to fit ...]"
    return summary.rstrip() + tail


def _clone_url(repo: Repository, git_url: Optional[str]) -> str:
    return f"{git_url}/{repo.full_name}.git" if git_url else repo.clone_url


def _fork(gh: GitHubClient, repo: Repository, user: User, first: PushOutcome) -> tuple[Repository, bool]:
    try:
        mine = gh.find_repository(user.login, repo.name)
        if mine is not None and mine.fork and (mine.parent or "").lower() == repo.full_name.lower():
            return mine, False
        return gh.create_fork(repo.owner, repo.name), True
    except GitHubError as exc:
        raise PullRequestError(f"{repo.full_name} refused the push ({first.message}) and no fork could be "
                               f"used: {exc}") from None


def _push_to_fork(ws, fork: Repository, git_url, sha, branch, token, settings, created, say,
                  allowed_hosts) -> PushOutcome:
    """Push to the fork; a fork just created may not take pushes yet (404), so that is retried for a while."""
    deadline = time.monotonic() + (settings.fork_wait_s if created else 0)
    delay = 1.0
    while True:
        say(f"pushing {branch} to {fork.full_name}")
        outcome = push(ws, _clone_url(fork, git_url), sha, branch, token, settings.push_timeout_s, allowed_hosts)
        if outcome.ok or outcome.kind != "missing" or time.monotonic() + delay > deadline:
            return outcome
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
