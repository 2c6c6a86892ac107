"""The REST client against the fake GitHub on loopback: issue and every comment (pagination), headers, 404,
401, rate limits waited out or reported with their reset time, retries, and links to other hosts refused."""
import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopcoder.scenarios.resolve.config import GitHubSettings
from loopcoder.scenarios.resolve.errors import AuthError, GitHubError, NotFoundError, RateLimitError
from loopcoder.scenarios.resolve.github import API_VERSION, GitHubClient
from loopcoder.scenarios.resolve.token import Token

from resolve_support import COMMENTS, ISSUE_TITLE


def client(github, token=None, **settings):
    return GitHubClient(github.api_url, Token(token, "GITHUB_ENTERPRISE_TOKEN") if token else None,
                        GitHubSettings(**settings), web_host=github.url.split("//")[1])


def test_issue_with_every_comment_across_pages_and_the_official_headers(github, token):
    github.add_issue("octo", "stats", "many comments", "body",
                     comments=tuple((f"u{i}", f"comment {i}") for i in range(5)))
    with client(github, token, per_page=2) as gh:
        issue = gh.issue("octo", "stats", 2)
        first = gh.issue("octo", "stats", 1)
    assert [c.body for c in issue.comments] == [f"comment {i}" for i in range(5)]
    assert (first.title, first.state, first.locked, first.labels) == (ISSUE_TITLE, "open", False, ["bug"])
    assert [(c.author, c.body) for c in first.comments] == list(COMMENTS)
    pages = [r for r in github.records if r.path.endswith("/issues/2/comments")]
    assert len(pages) == 3  # 2 + 2 + 1, following Link: rel="next"
    assert all(r.accept == "application/vnd.github+json" and r.api_version == API_VERSION and r.user == "you"
               for r in github.records)


def test_anonymous_reads_of_a_public_repository(github):
    with client(github) as gh:
        repo = gh.repository("octo", "stats")
        assert gh.issue("octo", "stats", 1).comment_count == 3
    assert (repo.full_name, repo.default_branch, repo.can_push) == ("octo/stats", "master", None)
    assert repo.clone_url == f"{github.url}/octo/stats.git"
    assert {r.user for r in github.records} == {None}


def test_missing_repository_issue_and_a_pull_request_number(github, token):
    with client(github, token) as gh:
        with pytest.raises(NotFoundError) as err:
            gh.repository("octo", "nope")
        assert str(err.value).startswith("repository octo/nope not found on 127.0.0.1:")
        assert "or the GITHUB_ENTERPRISE_TOKEN token cannot see it" in str(err.value)
        with pytest.raises(NotFoundError, match=r"issue #99 of octo/stats not found"):
            gh.issue("octo", "stats", 99)
    github.repo("octo/stats").pulls.append({"number": 7, "url": "x", "title": "a pull request"})
    with client(github, token) as gh, pytest.raises(NotFoundError, match="#7 of octo/stats is a pull request"):
        gh.issue("octo", "stats", 7)


def test_private_repository_without_a_token_says_how_to_give_one(github, tmp_path):
    from loopcoder.scenarios.demo import make_demo_repo

    github.add_repo("octo", "secret", make_demo_repo(tmp_path / "s2"), private=True)
    with client(github) as gh, pytest.raises(NotFoundError) as err:
        gh.repository("octo", "secret")
    assert "or it is private: set GITHUB_ENTERPRISE_TOKEN for 127.0.0.1:" in str(err.value)


def test_a_rejected_token_is_one_line_naming_its_source_not_its_value(github):
    with client(github, "ghp_not_a_real_token_123") as gh, pytest.raises(AuthError) as err:
        gh.repository("octo", "stats")
    message = str(err.value)
    assert message.startswith("GitHub rejected the GITHUB_ENTERPRISE_TOKEN token on 127.0.0.1:")
    assert "401 Bad credentials" in message and "ghp_not_a_real_token_123" not in message and "\n" not in message
    with client(github) as gh, pytest.raises(AuthError, match=r"the token's user needs authentication \(401"):
        gh.user()


def test_a_rate_limit_that_resets_soon_is_waited_out(github, token):
    github.set_rate_limit(remaining=1, reset_in=1.5)
    waits = []
    with GitHubClient(github.api_url, Token(token, "T"), GitHubSettings(max_rate_limit_wait_s=10),
                      on_wait=waits.append) as gh:
        gh.repository("octo", "stats")  # the last request the limit allows
        started = time.monotonic()
        issue = gh.issue("octo", "stats", 1)  # 403 x-ratelimit-remaining: 0, wait for the reset, then served
    assert issue.number == 1 and time.monotonic() - started >= 1.0
    assert waits and waits[0].startswith("GitHub rate limit reached; waiting")
    assert [r.status for r in github.records[:3]] == [200, 403, 200]


def test_a_rate_limit_that_resets_later_is_one_line_with_the_reset_time(github, token):
    github.set_rate_limit(remaining=0, reset_in=3600, limit=60)
    reset = int(github.rate["reset"])
    with client(github) as gh, pytest.raises(RateLimitError) as err:
        gh.repository("octo", "stats")
    when = datetime.fromtimestamp(reset, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    message = str(err.value)
    assert f"GitHub API rate limit exhausted on 127.0.0.1:" in message and "(60 requests per hour)" in message
    assert f"it resets at {when} (in 60 min)" in message and "\n" not in message
    assert "unauthenticated requests have a low limit: set GITHUB_ENTERPRISE_TOKEN" in message
    assert len(github.records) == 1  # no retry storm


def test_secondary_limit_retry_after_and_server_errors_are_retried(github, token):
    github.queue(429, "You have exceeded a secondary rate limit", {"Retry-After": "1"})
    github.queue(502, "bad gateway")
    started = time.monotonic()
    with client(github, token, max_attempts=2, backoff_initial_s=0.05) as gh:
        repo = gh.repository("octo", "stats")
    assert repo.name == "stats" and time.monotonic() - started >= 1.0
    assert [r.status for r in github.records] == [429, 502, 200]
    github.queue(500, "down", count=3)
    with client(github, token, max_attempts=2, backoff_initial_s=0.05) as gh, pytest.raises(GitHubError, match=r"GitHub answered 500 \(down\)"):
        gh.repository("octo", "stats")


def test_an_unreachable_api_is_one_line(github):
    dead = GitHubClient("http://127.0.0.1:9/api/v3", None, GitHubSettings(max_attempts=1))
    with pytest.raises(GitHubError, match=r"^cannot reach the GitHub API at http://127.0.0.1:9/api/v3 \(ConnectError"):
        dead.repository("octo", "stats")


def test_a_pagination_link_to_another_host_is_not_followed(token):
    """A server whose Link header points elsewhere: the token must not follow it."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            data = json.dumps([{"id": 1}]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Link", '<http://127.0.0.1:9/steal?page=2>; rel="next"')
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        gh = GitHubClient(f"http://127.0.0.1:{httpd.server_address[1]}/api/v3", Token(token, "T"))
        with pytest.raises(GitHubError, match=r"refusing to follow a link to 127.0.0.1:9"):
            gh.paginate("repos/o/r/issues/1/comments", "comments")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen == [f"Bearer {token}"]


def test_an_api_url_that_answers_html_says_so():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            data = b"<html>sign in</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with GitHubClient(url, None) as gh, pytest.raises(GitHubError) as err:
            gh.repository("octo", "stats")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert str(err.value) == (f"repository octo/stats: {url} answered 200 with text/html, not JSON; is the API URL "
                              "right (Enterprise: https://HOST/api/v3)?")
