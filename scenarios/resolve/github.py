"""The GitHub REST API over httpx: issues, comments, repositories, forks, pull requests.

Official headers (``Accept: application/vnd.github+json``, ``X-GitHub-Api-Version``), pagination through
``Link: rel="next"`` (only on the API's own host, so the token never follows a link elsewhere), rate limits
(403/429 with ``x-ratelimit-remaining: 0`` waits until ``x-ratelimit-reset``, ``Retry-After`` waits that long,
when either is within ``max_rate_limit_wait_s``; otherwise a one-line RateLimitError with the reset time),
401/404 as one line each, 5xx and dropped connections retried. The token goes only into the
``Authorization`` header of requests to the API host and into no message.
"""
from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import httpx

from loopcoder.scenarios.resolve.config import GitHubSettings
from loopcoder.scenarios.resolve.errors import AuthError, GitHubError, NotFoundError, RateLimitError
from loopcoder.scenarios.resolve.token import Token, token_hint
from loopcoder.scenarios.resolve.urls import host_of

API_VERSION = "2022-11-28"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


@dataclass
class Repository:
    full_name: str
    owner: str
    name: str
    default_branch: str
    clone_url: str
    html_url: str
    private: bool = False
    fork: bool = False
    parent: Optional[str] = None  # full name of the repository this one was forked from
    can_push: Optional[bool] = None  # permissions.push as the API reports it for this token (None: unknown)

    @classmethod
    def from_api(cls, d: dict) -> "Repository":
        parent = (d.get("parent") or {}).get("full_name")
        perms = d.get("permissions") if isinstance(d.get("permissions"), dict) else {}
        return cls(full_name=d["full_name"], owner=d["owner"]["login"], name=d["name"],
                   default_branch=d.get("default_branch") or "main", clone_url=d.get("clone_url") or "",
                   html_url=d.get("html_url") or "", private=bool(d.get("private")), fork=bool(d.get("fork")),
                   parent=parent, can_push=perms.get("push"))


@dataclass
class Comment:
    author: str
    body: str
    created_at: str
    html_url: str = ""


@dataclass
class Issue:
    number: int
    title: str
    body: str
    state: str  # open | closed
    locked: bool
    author: str
    html_url: str
    created_at: str = ""
    labels: list[str] = field(default_factory=list)
    comment_count: int = 0
    comments: list[Comment] = field(default_factory=list)

    @classmethod
    def from_api(cls, d: dict) -> "Issue":
        return cls(number=d["number"], title=d.get("title") or "", body=d.get("body") or "",
                   state=d.get("state") or "open", locked=bool(d.get("locked")),
                   author=(d.get("user") or {}).get("login") or "ghost", html_url=d.get("html_url") or "",
                   created_at=d.get("created_at") or "",
                   labels=[lb["name"] if isinstance(lb, dict) else str(lb) for lb in d.get("labels") or []],
                   comment_count=int(d.get("comments") or 0))


@dataclass
class User:
    login: str
    id: int
    name: Optional[str] = None

    @property
    def noreply_email(self) -> str:
        """The address GitHub itself uses for web commits of this account."""
        return f"{self.id}+{self.login}@users.noreply.github.com"


@dataclass
class PullRequest:
    number: int
    html_url: str
    draft: bool
    head: str  # "owner:branch"
    base: str


def _clean(text: Any, limit: int = 300) -> str:
    text = _CONTROL.sub(" ", str(text)).strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _message(resp: httpx.Response) -> str:
    """GitHub's error message (and the first validation error), or the status text."""
    try:
        data = resp.json()
    except ValueError:
        return resp.reason_phrase or "no message"
    if not isinstance(data, dict):
        return resp.reason_phrase or "no message"
    msg = str(data.get("message") or resp.reason_phrase or "no message")
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        first = errors[0]
        detail = first.get("message") or " ".join(str(first.get(k, "")) for k in ("resource", "field", "code")) \
            if isinstance(first, dict) else str(first)
        msg += f": {detail.strip()}"
    return _clean(msg)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class GitHubClient:
    """One API base URL, one token (or none). ``sleep``/``clock`` are injectable only for waiting less in demos."""

    def __init__(self, api_url: str, token: Optional[Token], settings: Optional[GitHubSettings] = None,
                 web_host: Optional[str] = None, on_wait: Optional[Callable[[str], None]] = None,
                 transport: Optional[httpx.BaseTransport] = None):
        self.api_url = api_url.rstrip("/")
        self.api_host = host_of(self.api_url)
        self.web_host = web_host or self.api_host  # for hints naming the host a token belongs to
        self.token = token
        self.settings = settings or GitHubSettings()
        self.on_wait = on_wait or (lambda line: None)
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": "loopcoder-resolve"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.value}"
        self._http = httpx.Client(headers=headers, timeout=self.settings.timeout_s, follow_redirects=False,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "GitHubClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, what: str, params: Optional[dict] = None,
                json: Optional[dict] = None, ok: tuple[int, ...] = ()) -> httpx.Response:
        """One API call (``path`` relative to the API URL, or a full URL on the API host); errors as one line.

        ``ok``: statuses (besides 2xx) the caller handles itself.
        """
        url = path if path.startswith(("http://", "https://")) else f"{self.api_url}/{path.lstrip('/')}"
        if host_of(url) != self.api_host:
            raise GitHubError(f"refusing to follow a link to {host_of(url)} (the API is on {self.api_host})")
        attempts = rate_waits = 0
        while True:
            attempts += 1
            try:
                resp = self._http.request(method, url, params=params, json=json)
            except httpx.TransportError as exc:
                if attempts < self.settings.max_attempts:
                    self._pause(self._backoff(attempts), f"{type(exc).__name__} from {self.api_host}; retrying")
                    continue
                raise GitHubError(f"cannot reach the GitHub API at {self.api_url} ({type(exc).__name__}: "
                                  f"{_clean(exc)}); check the URL or --api-url") from None
            if resp.status_code < 300 or resp.status_code in ok:
                return resp
            wait = self._rate_limit_wait(resp)
            if wait is not None:
                rate_waits += 1
                if wait <= self.settings.max_rate_limit_wait_s and rate_waits <= 5:
                    self._pause(wait, f"GitHub rate limit reached; waiting {wait:.0f} s")
                    attempts -= 1  # a rate-limit wait is not a failed attempt
                    continue
                raise RateLimitError(self._rate_limit_message(resp, wait), resp.status_code)
            if resp.status_code >= 500 and attempts < self.settings.max_attempts:
                self._pause(self._backoff(attempts), f"GitHub answered {resp.status_code}; retrying")
                continue
            raise self._error(resp, what)

    def get_json(self, path: str, what: str, params: Optional[dict] = None) -> Any:
        return self._json(self.request("GET", path, what, params=params), what)

    def paginate(self, path: str, what: str, params: Optional[dict] = None) -> list:
        """Every item of a list endpoint, following ``Link: rel="next"``."""
        items: list = []
        url: Optional[str] = path
        params = {"per_page": self.settings.per_page, **(params or {})}
        pages = 0
        while url:
            resp = self.request("GET", url, what, params=params)
            page = self._json(resp, what)
            if not isinstance(page, list):
                raise GitHubError(f"{what}: the API answered {type(page).__name__}, expected a list")
            items.extend(page)
            pages += 1
            url = resp.links.get("next", {}).get("url")
            params = None  # the next link carries its own query
            if pages >= 1000:
                raise GitHubError(f"{what}: more than 1000 pages; giving up")
        return items

    # -- resources ---------------------------------------------------------------------------------

    def repository(self, owner: str, repo: str) -> Repository:
        return Repository.from_api(self.get_json(f"repos/{owner}/{repo}", f"repository {owner}/{repo}"))

    def find_repository(self, owner: str, repo: str) -> Optional[Repository]:
        """The repository, or None when it does not exist (404)."""
        resp = self.request("GET", f"repos/{owner}/{repo}", f"repository {owner}/{repo}", ok=(404,))
        return None if resp.status_code == 404 else Repository.from_api(self._json(resp, f"repository {owner}/{repo}"))

    def issue(self, owner: str, repo: str, number: int) -> Issue:
        """The issue with all its comments; NotFoundError for a pull request number too."""
        what = f"issue #{number} of {owner}/{repo}"
        data = self.get_json(f"repos/{owner}/{repo}/issues/{number}", what)
        if data.get("pull_request"):
            raise NotFoundError(f"#{number} of {owner}/{repo} is a pull request, not an issue", 404)
        issue = Issue.from_api(data)
        if issue.comment_count:
            issue.comments = [Comment(author=(c.get("user") or {}).get("login") or "ghost", body=c.get("body") or "",
                                      created_at=c.get("created_at") or "", html_url=c.get("html_url") or "")
                              for c in self.paginate(f"repos/{owner}/{repo}/issues/{number}/comments",
                                                     f"comments of {what}")]
        return issue

    def user(self) -> User:
        d = self.get_json("user", "the token's user")
        return User(login=d["login"], id=int(d.get("id") or 0), name=d.get("name"))

    def create_fork(self, owner: str, repo: str) -> Repository:
        """Fork ``owner/repo`` into the token's account (GitHub answers with the existing fork when there is one)."""
        resp = self.request("POST", f"repos/{owner}/{repo}/forks", f"fork of {owner}/{repo}", json={})
        return Repository.from_api(self._json(resp, f"fork of {owner}/{repo}"))

    def create_pull(self, owner: str, repo: str, title: str, head: str, base: str, body: str,
                    draft: bool = True) -> PullRequest:
        what = f"pull request into {owner}/{repo}"
        resp = self.request("POST", f"repos/{owner}/{repo}/pulls", what,
                            json={"title": title, "head": head, "base": base, "body": body, "draft": draft,
                                  "maintainer_can_modify": True})
        d = self._json(resp, what)
        return PullRequest(number=d["number"], html_url=d.get("html_url") or "", draft=bool(d.get("draft")),
                           head=(d.get("head") or {}).get("label") or head, base=(d.get("base") or {}).get("ref") or base)

    # -- helpers -----------------------------------------------------------------------------------

    def _json(self, resp: httpx.Response, what: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            kind = resp.headers.get("content-type", "no content type")
            raise GitHubError(f"{what}: {self.api_url} answered {resp.status_code} with {_clean(kind, 60)}, not "
                              "JSON; is the API URL right (Enterprise: https://HOST/api/v3)?") from None

    def _backoff(self, attempts: int) -> float:
        return min(self.settings.backoff_initial_s * 2.0 ** (attempts - 1), 30.0)

    def _pause(self, seconds: float, line: str) -> None:
        self.on_wait(line)
        time.sleep(max(0.0, seconds))

    @staticmethod
    def _rate_limit_wait(resp: httpx.Response) -> Optional[float]:
        """Seconds to wait when ``resp`` is a rate-limit answer (primary or secondary), else None."""
        if resp.status_code not in (403, 429):
            return None
        retry_after = resp.headers.get("retry-after")
        if retry_after:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                parsed = email.utils.parsedate_to_datetime(retry_after) if retry_after else None
                if parsed is not None:
                    return max(0.0, parsed.timestamp() - time.time())
        if resp.headers.get("x-ratelimit-remaining") == "0":
            try:
                reset = float(resp.headers.get("x-ratelimit-reset", ""))
            except ValueError:
                return 60.0
            return max(0.0, reset - time.time()) + 1.0  # the reset second itself may still be limited
        if resp.status_code == 429:
            return 60.0  # GitHub's advice for a secondary limit without headers: wait at least a minute
        return None

    def _rate_limit_message(self, resp: httpx.Response, wait: float) -> str:
        limit = resp.headers.get("x-ratelimit-limit")
        reset = resp.headers.get("x-ratelimit-reset")
        when = _utc(float(reset)) if reset and reset.isdigit() else _utc(time.time() + wait)
        what = f"{limit} requests per hour" if limit else "secondary limit"
        hint = "" if self.token else f"; unauthenticated requests have a low limit: {token_hint(self.web_host)}"
        return (f"GitHub API rate limit exhausted on {self.api_host} ({what}); it resets at {when} "
                f"(in {wait / 60:.0f} min), longer than resolve.github.max_rate_limit_wait_s "
                f"({self.settings.max_rate_limit_wait_s:.0f} s){hint}")

    def _error(self, resp: httpx.Response, what: str) -> GitHubError:
        status, msg = resp.status_code, _message(resp)
        if status == 401:
            if self.token is None:
                return AuthError(f"{what} needs authentication (401 {msg}); {token_hint(self.web_host)}", status)
            return AuthError(f"GitHub rejected the {self.token.source} token on {self.api_host} (401 {msg}); "
                             "check that it is valid and not expired", status)
        if status == 404:
            why = (f"or it is private: {token_hint(self.web_host)}" if self.token is None
                   else f"or the {self.token.source} token cannot see it")
            return NotFoundError(f"{what} not found on {self.web_host} (404; {why})", status)
        if status == 403:
            return GitHubError(f"{what}: access refused (403 {msg})", status)
        if status == 410:
            return NotFoundError(f"{what} is gone (410 {msg}): deleted, or issues are disabled", status)
        return GitHubError(f"{what}: GitHub answered {status} ({msg})", status)
