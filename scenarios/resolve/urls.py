"""Issue URLs of github.com and GitHub Enterprise hosts, and the API and git base URLs that go with them.

Accepted: ``http(s)://HOST/OWNER/REPO/issues/N`` with an optional trailing slash, query or fragment
(``#issuecomment-123``). Everything else (pull requests, other pages, other schemes, URLs holding
credentials) is an ``IssueUrlError`` that names what was expected. A message never repeats a URL that
holds credentials.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from loopcoder.scenarios.resolve.errors import IssueUrlError

EXPECTED = ("expected an issue URL such as https://github.com/OWNER/REPO/issues/123 "
            "(GitHub Enterprise: https://HOST/OWNER/REPO/issues/123)")
_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class IssueRef:
    """One issue: where it lives and its number."""

    scheme: str  # http or https
    host: str  # lower-case host, with :port when one was given
    owner: str
    repo: str
    number: int

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def web_base(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def url(self) -> str:
        return f"{self.web_base}/{self.owner}/{self.repo}/issues/{self.number}"

    @property
    def is_github_com(self) -> bool:
        return self.host == "github.com"

    def default_api_url(self) -> str:
        """api.github.com for github.com; ``SCHEME://HOST/api/v3`` for an Enterprise host (its REST root)."""
        return "https://api.github.com" if self.is_github_com else f"{self.web_base}/api/v3"


def _shown(text: str) -> str:
    text = _CONTROL.sub("?", text)
    return text if len(text) <= 200 else text[:200] + "..."


def parse_issue_url(text: str) -> IssueRef:
    """The issue a URL names; IssueUrlError (one line, naming what was expected) for anything else."""
    raw = (text or "").strip()
    if not raw:
        raise IssueUrlError(f"no URL given; {EXPECTED}")
    try:
        parts = urlsplit(raw)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise IssueUrlError(f"{_shown(raw)!r} is not a valid URL; {EXPECTED}") from None
    scheme = parts.scheme.lower()
    has_userinfo = "@" in parts.netloc
    shown = "the URL" if has_userinfo else repr(_shown(raw))  # user-info may be a token: never echo it
    if scheme not in ("http", "https"):
        what = f"uses the scheme {scheme!r}" if scheme and parts.netloc else "is not an http(s) URL"
        raise IssueUrlError(f"{shown} {what}; {EXPECTED}")
    if has_userinfo:
        raise IssueUrlError("the URL holds credentials (user-info before '@'); remove them and set "
                            f"GITHUB_TOKEN instead; {EXPECTED}")
    host = (parts.hostname or "").lower()
    if not host:
        raise IssueUrlError(f"{_shown(raw)!r} has no host; {EXPECTED}")
    if host == "www.github.com":
        host = "github.com"
    if host == "api.github.com":
        raise IssueUrlError(f"{_shown(raw)!r} is an API URL, not the issue's page; {EXPECTED}")
    if port is not None:
        host = f"{host}:{port}"
    segments = parts.path.split("/")[1:]
    if segments and segments[-1] == "":  # one trailing slash
        segments = segments[:-1]
    if len(segments) >= 3 and segments[2] in ("pull", "pulls"):
        raise IssueUrlError(f"{_shown(raw)!r} is a pull request, not an issue; {EXPECTED}")
    if len(segments) != 4 or segments[2] != "issues" or "" in segments:
        raise IssueUrlError(f"{_shown(raw)!r} is not an issue URL (path {_shown(parts.path) or '/'}); {EXPECTED}")
    owner, repo, _, number = segments
    if not _OWNER.match(owner) or not _REPO.match(repo) or repo in (".", ".."):
        raise IssueUrlError(f"{_shown(raw)!r} does not name a repository as OWNER/REPO; {EXPECTED}")
    if not number.isascii() or not number.isdigit() or len(number) > 9 or int(number) == 0:
        raise IssueUrlError(f"{_shown(raw)!r}: {_shown(number)!r} is not an issue number; {EXPECTED}")
    return IssueRef(scheme=scheme, host=host, owner=owner, repo=repo, number=int(number))


def base_url(flag: str, text: str) -> str:
    """A base URL given with ``flag`` (--api-url, --git-url): http(s), a host, no credentials, no query.

    Returned without a trailing slash. IssueUrlError otherwise (never repeating credentials).
    """
    raw = (text or "").strip()
    try:
        parts = urlsplit(raw)
        parts.port
    except ValueError:
        raise IssueUrlError(f"{flag} {_shown(raw)!r} is not a valid URL") from None
    if "@" in parts.netloc:
        raise IssueUrlError(f"{flag} holds credentials (user-info before '@'); remove them and use the token "
                            "variables instead")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise IssueUrlError(f"{flag} {_shown(raw)!r}: expected an http(s) URL such as https://HOST/api/v3")
    if parts.query or parts.fragment:
        raise IssueUrlError(f"{flag} {_shown(raw)!r}: a base URL has no query or fragment")
    return raw.rstrip("/")


def host_of(url: str) -> str:
    """Lower-case host (with :port) of an http(s) URL."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port is not None else host
