"""Issue URLs: the forms GitHub and GitHub Enterprise use are accepted; every other kind of URL is one line
naming what was expected, through the CLI too (exit 2, no traceback)."""
import pytest

from loopcoder.scenarios.cli import main
from loopcoder.scenarios.resolve.errors import IssueUrlError
from loopcoder.scenarios.resolve.urls import EXPECTED, base_url, parse_issue_url


@pytest.mark.parametrize("url, host, api", [
    ("https://github.com/psf/requests/issues/6432", "github.com", "https://api.github.com"),
    ("https://github.com/psf/requests/issues/6432/", "github.com", "https://api.github.com"),
    ("https://github.com/psf/requests/issues/6432#issuecomment-1612", "github.com", "https://api.github.com"),
    ("https://github.com/psf/requests/issues/6432?q=1", "github.com", "https://api.github.com"),
    ("  https://www.github.com/psf/requests/issues/6432  ", "github.com", "https://api.github.com"),
    ("HTTPS://GitHub.com/psf/requests/issues/6432", "github.com", "https://api.github.com"),
    ("https://ghe.corp.example/psf/requests/issues/6432", "ghe.corp.example", "https://ghe.corp.example/api/v3"),
    ("http://127.0.0.1:8123/psf/requests/issues/6432", "127.0.0.1:8123", "http://127.0.0.1:8123/api/v3"),
])
def test_issue_urls_of_github_and_enterprise_hosts(url, host, api):
    ref = parse_issue_url(url)
    assert (ref.host, ref.owner, ref.repo, ref.number) == (host, "psf", "requests", 6432)
    assert ref.default_api_url() == api
    assert ref.url.endswith("/psf/requests/issues/6432")


@pytest.mark.parametrize("url, says", [
    ("https://github.com/psf/requests/pull/6433", "is a pull request, not an issue"),
    ("https://github.com/psf/requests/pull/6433/files", "is a pull request, not an issue"),
    ("https://github.com/psf/requests/pulls", "is a pull request, not an issue"),
    ("https://github.com/psf/requests", "is not an issue URL (path /psf/requests)"),
    ("https://github.com/psf/requests/issues", "is not an issue URL"),
    ("https://github.com/psf/requests/issues/6432/events", "is not an issue URL"),
    ("https://github.com/psf/requests/blob/main/setup.py", "is not an issue URL"),
    ("https://github.com/psf//issues/1", "is not an issue URL"),
    ("https://github.com/psf/requests/issues/abc", "'abc' is not an issue number"),
    ("https://github.com/psf/requests/issues/0", "'0' is not an issue number"),
    ("https://github.com/psf/requests/issues/-3", "'-3' is not an issue number"),
    ("https://github.com/psf/requests/issues/\u0661\u0662", "is not an issue number"),
    ("https://github.com/-psf/requests/issues/1", "does not name a repository as OWNER/REPO"),
    ("git@github.com:psf/requests.git", "is not an http(s) URL"),
    ("ssh://git@github.com/psf/requests/issues/1", "the URL uses the scheme 'ssh'"),
    ("ftp://github.com/psf/requests/issues/1", "uses the scheme 'ftp'"),
    ("file:///tmp/psf/requests/issues/1", "is not an http(s) URL"),
    ("psf/requests#1", "is not an http(s) URL"),
    ("https:///psf/requests/issues/1", "has no host"),
    ("https://github.com:notaport/psf/requests/issues/1", "is not a valid URL"),
    ("https://api.github.com/repos/psf/requests/issues/1", "is an API URL"),
    ("", "no URL given"),
])
def test_other_urls_are_refused_naming_what_was_expected(url, says):
    with pytest.raises(IssueUrlError) as err:
        parse_issue_url(url)
    message = str(err.value)
    assert says in message and message.endswith(EXPECTED) and "\n" not in message


def test_credentials_in_the_url_are_refused_without_repeating_them():
    with pytest.raises(IssueUrlError) as err:
        parse_issue_url("https://me:ghp_secretvalue123@github.com/psf/requests/issues/1")
    assert "credentials" in str(err.value) and "ghp_secretvalue123" not in str(err.value)
    with pytest.raises(IssueUrlError) as err:
        base_url("--api-url", "https://ghp_secretvalue123@ghe.example/api/v3")
    assert "credentials" in str(err.value) and "ghp_secretvalue123" not in str(err.value)


def test_base_urls_for_api_and_git():
    assert base_url("--api-url", "https://ghe.example/api/v3/") == "https://ghe.example/api/v3"
    for bad in ("ghe.example/api/v3", "ssh://ghe.example", "https://ghe.example/api?x=1"):
        with pytest.raises(IssueUrlError, match="--git-url"):
            base_url("--git-url", bad)


@pytest.mark.parametrize("url", ["https://github.com/psf/requests/pull/1", "not a url", "https://github.com/psf"])
def test_the_cli_says_it_in_one_line(url, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["resolve", url])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "expected an issue URL" in err
    assert "Traceback" not in err
