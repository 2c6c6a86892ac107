"""A GitHub for tests and demos: a real HTTP server on 127.0.0.1 with the REST endpoints `resolve` uses and
git smart HTTP over local bare repositories (``git http-backend`` as CGI).

REST (under ``/api/v3``, as on GitHub Enterprise): ``GET /repos/O/R``, ``GET /repos/O/R/issues/N``,
``GET /repos/O/R/issues/N/comments`` (``per_page``/``page`` with ``Link`` headers), ``GET /user``,
``POST /repos/O/R/forks``, ``GET|POST /repos/O/R/pulls``. Tokens (``Authorization: Bearer|token T``) map to
users; an unknown token is 401 "Bad credentials", a private repository is 404 to anyone without access,
every answer carries ``x-ratelimit-*`` headers, and a primary limit (403, ``x-ratelimit-remaining: 0``) or
queued answers (429 with ``Retry-After``, 500, ...) can be switched on.

Git (``/O/R.git/info/refs``, ``git-upload-pack``, ``git-receive-pack``): Basic auth whose password (or user
name) is a token, as GitHub takes it. Clones of public repositories need none; private ones answer 401 with
``WWW-Authenticate`` until credentials come (so a client must answer a challenge, as with GitHub); pushes
need a token whose user may push (else 403 "Permission to O/R.git denied to LOGIN."), and a token created
``can_write=False`` is refused every push (a read-only fine-grained token). With ``scan_for=SECRET`` every
git request also scans every process's command line on this machine for SECRET and records hits.

Run it for a demo: ``python -m loopcoder.scenarios.resolve.fake_github`` (see docs/resolve.md).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlencode, urlsplit

API_PREFIX = "/api/v3"
_GIT_PATH = re.compile(r"^/(?P<owner>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/(?P<rest>info/refs|git-upload-pack|git-receive-pack)$")


@dataclass
class FakeUser:
    login: str
    id: int
    token: str
    can_write: bool = True  # False: a token without write scope (every push refused)


@dataclass
class FakeIssue:
    number: int
    title: str
    body: str
    author: str
    state: str = "open"
    locked: bool = False
    labels: list[str] = field(default_factory=list)
    comments: list[dict] = field(default_factory=list)


@dataclass
class FakeRepo:
    owner: str
    name: str
    path: Path  # the bare repository
    default_branch: str
    private: bool = False
    pushers: set[str] = field(default_factory=set)  # logins that may push (the owner always may)
    readers: set[str] = field(default_factory=set)  # logins that may see a private repository
    parent: Optional[str] = None
    allow_forking: bool = True
    allow_drafts: bool = True
    issues: dict[int, FakeIssue] = field(default_factory=dict)
    pulls: list[dict] = field(default_factory=list)
    next_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def can_push(self, login: Optional[str]) -> bool:
        return login is not None and (login == self.owner or login in self.pushers)

    def can_read(self, login: Optional[str]) -> bool:
        return not self.private or (login is not None and (self.can_push(login) or login in self.readers))


@dataclass
class Record:
    """One request as the server saw it (never the token itself)."""

    kind: str  # api | git
    method: str
    path: str
    user: Optional[str]  # login, None (anonymous) or "<invalid>"
    status: int
    accept: str = ""
    api_version: str = ""


class FakeGitHub:
    """Start with ``with FakeGitHub(tmp) as gh:``; ``gh.url`` is the web and git base, ``gh.api_url`` the API."""

    def __init__(self, root: str | Path, scan_for: Optional[str] = None, clone_url_base: Optional[str] = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.users: dict[str, FakeUser] = {}
        self.repos: dict[str, FakeRepo] = {}
        self.records: list[Record] = []
        self.queued: list[dict] = []  # answers given instead of the next API requests
        self.rate = {"limit": 5000, "remaining": 5000, "reset": time.time() + 3600}
        self.scan_for = scan_for
        self.scans = 0
        self.scan_hits: list[str] = []
        self.lock = threading.RLock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.api_url = self.url + API_PREFIX
        self.clone_url_base = clone_url_base or self.url
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> "FakeGitHub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeGitHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- set-up ------------------------------------------------------------------------------------

    def add_user(self, login: str, token: str, can_write: bool = True) -> FakeUser:
        with self.lock:
            user = FakeUser(login=login, id=1000 + len(self.users), token=token, can_write=can_write)
            self.users[token] = user
            return user

    def add_repo(self, owner: str, name: str, source: str | Path, private: bool = False,
                 pushers: tuple[str, ...] = (), readers: tuple[str, ...] = ()) -> FakeRepo:
        """A repository whose git data is a bare clone of ``source`` (a local repository)."""
        path = self.root / owner / f"{name}.git"
        path.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "-q", "--bare", "--no-hardlinks", str(source), str(path)])
        branch = _git(["symbolic-ref", "--short", "HEAD"], cwd=path).strip() or "main"
        repo = FakeRepo(owner=owner, name=name, path=path, default_branch=branch, private=private,
                        pushers=set(pushers), readers=set(readers))
        with self.lock:
            self.repos[repo.full_name.lower()] = repo
        return repo

    def add_issue(self, owner: str, name: str, title: str, body: str, author: str = "reporter",
                  comments: tuple[tuple[str, str], ...] = (), state: str = "open", locked: bool = False,
                  labels: tuple[str, ...] = ()) -> FakeIssue:
        repo = self.repos[f"{owner}/{name}".lower()]
        with self.lock:
            issue = FakeIssue(number=repo.next_number, title=title, body=body, author=author, state=state,
                              locked=locked, labels=list(labels))
            repo.next_number += 1
            for i, (who, text) in enumerate(comments):
                issue.comments.append({"id": 5000 + i, "user": {"login": who}, "body": text,
                                       "created_at": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z"})
            repo.issues[issue.number] = issue
        return issue

    def issue_url(self, owner: str, name: str, number: int) -> str:
        return f"{self.url}/{owner}/{name}/issues/{number}"

    def set_rate_limit(self, remaining: int, reset_in: float, limit: int = 60) -> None:
        """After ``remaining`` more API requests, answer 403 (primary limit) until ``reset_in`` seconds from now."""
        with self.lock:
            self.rate = {"limit": limit, "remaining": remaining, "reset": time.time() + reset_in}

    def queue(self, status: int, message: str = "", headers: Optional[dict] = None, count: int = 1) -> None:
        """Answer the next ``count`` API requests with ``status`` (e.g. 429 and ``{"Retry-After": "1"}``)."""
        with self.lock:
            self.queued += [{"status": status, "message": message or f"queued {status}",
                             "headers": headers or {}}] * count

    def repo(self, full_name: str) -> FakeRepo:
        return self.repos[full_name.lower()]

    # -- JSON views --------------------------------------------------------------------------------

    def _repo_json(self, repo: FakeRepo, login: Optional[str]) -> dict:
        owner = next((u for u in self.users.values() if u.login == repo.owner), None)
        d = {"id": abs(hash(repo.full_name)) % 10**8, "name": repo.name, "full_name": repo.full_name,
             "owner": {"login": repo.owner, "id": owner.id if owner else 1, "type": "User"},
             "private": repo.private, "fork": repo.parent is not None, "default_branch": repo.default_branch,
             "html_url": f"{self.url}/{repo.full_name}", "clone_url": f"{self.clone_url_base}/{repo.full_name}.git",
             "url": f"{self.api_url}/repos/{repo.full_name}", "allow_forking": repo.allow_forking}
        if repo.parent:
            d["parent"] = self._repo_json(self.repos[repo.parent.lower()], login)
        if login is not None:
            d["permissions"] = {"admin": login == repo.owner, "push": repo.can_push(login), "pull": True}
        return d

    def _issue_json(self, repo: FakeRepo, issue: FakeIssue) -> dict:
        return {"number": issue.number, "title": issue.title, "body": issue.body, "state": issue.state,
                "locked": issue.locked, "user": {"login": issue.author}, "comments": len(issue.comments),
                "labels": [{"name": n} for n in issue.labels], "created_at": "2025-01-01T00:00:00Z",
                "html_url": self.issue_url(repo.owner, repo.name, issue.number),
                "url": f"{self.api_url}/repos/{repo.full_name}/issues/{issue.number}"}

    # -- the server --------------------------------------------------------------------------------

    def _handler(self):
        gh = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                gh._dispatch(self, "GET")

            def do_POST(self) -> None:
                gh._dispatch(self, "POST")

        return Handler

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        body = _read_body(h)
        if parts.path.startswith(API_PREFIX + "/") or parts.path == API_PREFIX:
            status, payload, headers, user = self._api(h, method, parts.path[len(API_PREFIX):], parts.query, body)
            with self.lock:
                self.records.append(Record("api", method, parts.path, user, status, h.headers.get("Accept", ""),
                                           h.headers.get("X-GitHub-Api-Version", "")))
            return _send(h, status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)
        m = _GIT_PATH.match(parts.path)
        if m:
            status, data, ctype, headers, user = self._git_request(h, method, m, parts.query, body)
            with self.lock:
                self.records.append(Record("git", method, parts.path, user, status))
            return _send(h, status, data, ctype, headers)
        _send(h, 404, b"Not Found\n", "text/plain", {})

    # -- REST --------------------------------------------------------------------------------------

    def _auth(self, header: str) -> tuple[Optional[FakeUser], bool]:
        """(user, valid): no header is (None, True); an unknown token is (None, False)."""
        if not header:
            return None, True
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token.strip():
            return None, False
        user = self.users.get(token.strip())
        return user, user is not None

    def _api(self, h, method: str, path: str, query: str, body: bytes):
        user, valid = self._auth(h.headers.get("Authorization", ""))
        who = user.login if user else (None if valid else "<invalid>")
        with self.lock:
            now = time.time()
            if now >= self.rate["reset"]:
                self.rate.update(remaining=self.rate["limit"], reset=now + 3600)
            headers = {"x-ratelimit-limit": str(self.rate["limit"]),
                       "x-ratelimit-remaining": str(max(0, self.rate["remaining"] - 1)),
                       "x-ratelimit-reset": str(int(self.rate["reset"])), "x-ratelimit-resource": "core"}
            if not valid:
                return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}, headers, who
            if self.rate["remaining"] <= 0:
                headers["x-ratelimit-remaining"] = "0"
                return 403, {"message": "API rate limit exceeded for 127.0.0.1.",
                             "documentation_url": "https://docs.github.com/rest/rate-limit"}, headers, who
            self.rate["remaining"] -= 1
            if self.queued:
                q = self.queued.pop(0)
                return q["status"], {"message": q["message"]}, {**headers, **q["headers"]}, who
        try:
            status, payload, extra = self._route(method, path, parse_qs(query), body, user)
        except _Answer as answer:
            status, payload, extra = answer.status, {"message": answer.message}, {}
        return status, payload, {**headers, **extra}, who

    def _route(self, method: str, path: str, query: dict, body: bytes, user: Optional[FakeUser]):
        login = user.login if user else None
        seg = [s for s in path.split("/") if s]
        if seg == ["user"] and method == "GET":
            if user is None:
                raise _Answer(401, "Requires authentication")
            return 200, {"login": user.login, "id": user.id, "name": user.login.title(), "email": None}, {}
        if len(seg) < 3 or seg[0] != "repos":
            raise _Answer(404, "Not Found")
        repo = self.repos.get(f"{seg[1]}/{seg[2]}".lower())
        if repo is None or not repo.can_read(login):
            raise _Answer(404, "Not Found")
        rest = seg[3:]
        if not rest and method == "GET":
            return 200, self._repo_json(repo, login), {}
        if rest[:1] == ["issues"] and len(rest) >= 2 and method == "GET":
            issue = repo.issues.get(int(rest[1])) if rest[1].isdigit() else None
            if issue is None:
                if rest[1].isdigit() and any(p["number"] == int(rest[1]) for p in repo.pulls):
                    pr = next(p for p in repo.pulls if p["number"] == int(rest[1]))
                    return 200, {**pr, "pull_request": {"url": pr["url"]}, "comments": 0, "locked": False}, {}
                raise _Answer(404, "Not Found")
            if len(rest) == 2:
                return 200, self._issue_json(repo, issue), {}
            if rest[2:] == ["comments"]:
                return self._comments(repo, issue, query)
        if rest == ["forks"] and method == "POST":
            return self._fork(repo, user)
        if rest == ["pulls"] and method == "GET":
            return 200, repo.pulls, {}
        if rest == ["pulls"] and method == "POST":
            return self._pull(repo, user, json.loads(body or b"{}"))
        raise _Answer(404, "Not Found")

    def _comments(self, repo: FakeRepo, issue: FakeIssue, query: dict):
        per_page = min(100, int((query.get("per_page") or ["30"])[0]))
        page = max(1, int((query.get("page") or ["1"])[0]))
        items = issue.comments[(page - 1) * per_page: page * per_page]
        last = max(1, -(-len(issue.comments) // per_page))
        base = f"{self.api_url}/repos/{repo.full_name}/issues/{issue.number}/comments"
        rels = ([("next", page + 1), ("last", last)] if page < last else []) + \
            ([("prev", page - 1), ("first", 1)] if page > 1 else [])
        links = [f'<{base}?{urlencode({"per_page": per_page, "page": p})}>; rel="{rel}"' for rel, p in rels]
        return 200, items, ({"Link": ", ".join(links)} if links else {})

    def _fork(self, repo: FakeRepo, user: Optional[FakeUser]):
        if user is None:
            raise _Answer(401, "Requires authentication")
        if not repo.allow_forking:
            raise _Answer(403, "Forking is disabled for this repository")
        with self.lock:
            existing = next((r for r in self.repos.values() if r.owner == user.login and r.parent == repo.full_name), None)
            if existing is None:
                name = repo.name if f"{user.login}/{repo.name}".lower() not in self.repos else f"{repo.name}-1"
                path = self.root / user.login / f"{name}.git"
                path.parent.mkdir(parents=True, exist_ok=True)
                _git(["clone", "-q", "--bare", "--no-hardlinks", str(repo.path), str(path)])
                existing = FakeRepo(owner=user.login, name=name, path=path, default_branch=repo.default_branch,
                                    private=repo.private, parent=repo.full_name)
                self.repos[existing.full_name.lower()] = existing
        return 202, self._repo_json(existing, user.login), {}

    def _pull(self, repo: FakeRepo, user: Optional[FakeUser], data: dict):
        if user is None:
            raise _Answer(401, "Requires authentication")
        head, base = str(data.get("head") or ""), str(data.get("base") or "")
        head_owner, _, branch = head.rpartition(":")
        head_repo = repo
        if head_owner and head_owner.lower() != repo.owner.lower():
            head_repo = next((r for r in self.repos.values()
                              if r.owner.lower() == head_owner.lower() and r.parent == repo.full_name), None)
        if head_repo is None or not branch or not _has_branch(head_repo.path, branch):
            return 422, {"message": "Validation Failed", "errors": [
                {"resource": "PullRequest", "field": "head", "code": "invalid"}]}, {}
        if not _has_branch(repo.path, base):
            return 422, {"message": "Validation Failed", "errors": [
                {"resource": "PullRequest", "field": "base", "code": "invalid"}]}, {}
        if data.get("draft") and not repo.allow_drafts:
            return 422, {"message": "Validation Failed", "errors": [
                {"message": "Draft pull requests are not supported in this repository."}]}, {}
        with self.lock:
            number = repo.next_number
            repo.next_number += 1
            pr = {"number": number, "title": data.get("title") or "", "body": data.get("body") or "",
                  "draft": bool(data.get("draft")), "state": "open", "user": {"login": user.login},
                  "head": {"label": f"{head_repo.owner}:{branch}", "ref": branch,
                           "sha": _git(["rev-parse", f"refs/heads/{branch}"], cwd=head_repo.path).strip(),
                           "repo": {"full_name": head_repo.full_name}},
                  "base": {"ref": base, "repo": {"full_name": repo.full_name}},
                  "maintainer_can_modify": bool(data.get("maintainer_can_modify")),
                  "html_url": f"{self.url}/{repo.full_name}/pull/{number}",
                  "url": f"{self.api_url}/repos/{repo.full_name}/pulls/{number}"}
            repo.pulls.append(pr)
        return 201, pr, {}

    # -- git smart HTTP ----------------------------------------------------------------------------

    def _git_request(self, h, method: str, m: re.Match, query: str, body: bytes):
        if self.scan_for:
            self._scan_processes()
        repo = self.repos.get(f"{m.group('owner')}/{m.group('repo')}".lower())
        service = (parse_qs(query).get("service") or [""])[0] if m.group("rest") == "info/refs" else m.group("rest")
        write = service == "git-receive-pack"
        user, valid = self._basic_auth(h.headers.get("Authorization", ""))
        who = user.login if user else (None if valid else "<invalid>")
        challenge = {"WWW-Authenticate": 'Basic realm="GitHub"'}
        if not valid:
            return 401, b"Invalid username or token.\n", "text/plain", challenge, who
        if repo is None:
            return 404, b"Repository not found.\n", "text/plain", {}, who
        login = user.login if user else None
        if not repo.can_read(login):
            return (401, b"", "text/plain", challenge, who) if user is None else \
                (404, b"Repository not found.\n", "text/plain", {}, who)
        if write:
            if user is None:
                return 401, b"", "text/plain", challenge, who
            if not repo.can_push(login) or not user.can_write:
                return 403, f"Permission to {repo.full_name}.git denied to {login}.\n".encode(), "text/plain", {}, who
        if service not in ("git-upload-pack", "git-receive-pack"):
            return 403, b"smart HTTP only\n", "text/plain", {}, who
        status, data, ctype, headers = _http_backend(self.root, f"/{repo.owner}/{repo.name}.git/{m.group('rest')}",
                                                     query, method, h.headers, body, login or "")
        return status, data, ctype, headers, who

    def _basic_auth(self, header: str) -> tuple[Optional[FakeUser], bool]:
        if not header:
            return None, True
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return self._auth(header)
        try:
            name, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, False
        user = self.users.get(password) or self.users.get(name)  # token as password, or as user name
        return user, user is not None

    def _scan_processes(self) -> None:
        """Record every process whose command line holds the secret (a token must never be an argument)."""
        secret = self.scan_for.encode()
        hits = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if secret in cmd:
                hits.append(f"pid {pid}: {cmd.replace(secret, b'<SECRET>').replace(bytes(1), b' ')[:200]!r}")
        with self.lock:
            self.scans += 1
            self.scan_hits += hits


class _Answer(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _git(args: list[str], cwd: Optional[Path] = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", GIT_TERMINAL_PROMPT="0")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _has_branch(path: Path, branch: str) -> bool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=path, env=env,
                          capture_output=True).returncode == 0


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return bytes(out)
            out += h.rfile.read(size)
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _send(h: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str, headers: dict) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data)))
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


def _http_backend(root: Path, path_info: str, query: str, method: str, headers, body: bytes, user: str):
    """Run ``git http-backend`` (CGI) for one request; (status, body, content type, headers)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), "GIT_PROJECT_ROOT": str(root),
           "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path_info, "QUERY_STRING": query, "REQUEST_METHOD": method,
           "CONTENT_TYPE": headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
           "REMOTE_USER": user, "REMOTE_ADDR": "127.0.0.1", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_COUNT": "2",
           # authorisation happened above; the backend may serve pushes to whoever got this far
           "GIT_CONFIG_KEY_0": "http.receivepack", "GIT_CONFIG_VALUE_0": "true",
           "GIT_CONFIG_KEY_1": "safe.directory", "GIT_CONFIG_VALUE_1": "*"}
    if headers.get("Content-Encoding"):
        env["HTTP_CONTENT_ENCODING"] = headers["Content-Encoding"]
    if headers.get("Git-Protocol"):
        env["GIT_PROTOCOL"] = headers["Git-Protocol"]
    proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
    raw = proc.stdout
    sep = raw.find(b"\r\n\r\n")
    head, data = (raw[:sep], raw[sep + 4:]) if sep >= 0 else (raw.split(b"\n\n", 1) + [b""])[:2]
    status, ctype, out_headers = 200, "application/octet-stream", {}
    for line in head.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key.lower() == "status":
            status = int(value.split()[0])
        elif key.lower() == "content-type":
            ctype = value
        elif key.lower() not in ("content-length", "transfer-encoding") and key:
            out_headers[key] = value
    if proc.returncode != 0 and status == 200:
        status, data, ctype = 500, proc.stderr or b"http-backend failed\n", "text/plain"
    return status, data, ctype, out_headers


def main(argv: Optional[list[str]] = None) -> None:
    """Serve the demo repository with one issue until Ctrl-C; print the URL, token and command to try."""
    import argparse
    import tempfile

    from loopcoder.scenarios.demo import TASK_FILE, make_demo_repo

    parser = argparse.ArgumentParser(prog="python -m loopcoder.scenarios.resolve.fake_github",
                                     description="A fake GitHub on 127.0.0.1 serving the demo repository.")
    parser.add_argument("--root", type=Path, default=None, help="folder for its bare repositories (default: temp)")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="loopcoder-fake-github-"))
    source = make_demo_repo(root / "source")
    gh = FakeGitHub(root / "github")
    token = "ghp_demo" + os.urandom(8).hex()
    gh.add_user("demo-owner", "ghp_owner" + os.urandom(8).hex())
    gh.add_user("you", token)
    gh.add_repo("demo-owner", "stats", source)
    issue = gh.add_issue("demo-owner", "stats", "median() is wrong for even-length lists",
                         (source / TASK_FILE).read_text(), comments=(("maintainer", "Confirmed: median([1, 2, 3, 4]) "
                                                                      "returns 3, it should be 2.5."),))
    with gh:
        url = gh.issue_url("demo-owner", "stats", issue.number)
        print(f"fake GitHub at {gh.url} (API {gh.api_url}); git data under {gh.root}")
        print(f"user 'you' (may fork, not push to demo-owner/stats), token {token}")
        print(f"\n  GITHUB_ENTERPRISE_TOKEN={token} loopcoder resolve {url} --open-pr\n")
        print("Ctrl-C stops it.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
