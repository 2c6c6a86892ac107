"""Host-side git obeys nothing the sandbox writes (issue 9: defects 1, 2 and the clone-URL part of 7).

Each payload below is what code inside a sandbox can write into the tree's ``.git`` (or the tree): config
keys, hooks, attributes, includes, a foreign work tree, alternates, a redirected ``.git``. A payload runs a
script that writes a marker file on the host. The host-side operations (clone set-up, re-open, extract_patch,
apply_patch with its fallbacks, checkout with and without fetching, create_branch, rev_parse, the tools'
file listing) must leave no marker and leak no host file. Each per-payload case (slow) then proves its
payload is live: plain ``git`` run the naive way in the tree does write the marker. The Docker cases write
the payloads from inside a real sandbox as its user.
"""
from __future__ import annotations

import base64
import os
import pty
import shutil
import stat
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from git_support import git
from loopcoder.runtime.errors import PatchApplyError, WorkspaceError
from loopcoder.runtime.workspace import GitWorkspace
from loopcoder.tools.workspace import Workspace

LINES = "".join(f"line {i}\n" for i in range(1, 31))
NAIVE_ENV = dict(os.environ, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*",
                 GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                 GIT_COMMITTER_EMAIL="t@t")


# -- a repository, a host secret, and a git server on loopback -------------------------------------


@dataclass
class Origin:
    path: Path
    c1: str
    c2: str
    patch3: str  # made on c1, changes line 15; applies to c2 (line 12 changed) only with --3way


@pytest.fixture
def origin(tmp_path) -> Origin:
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "lines.txt").write_text(LINES)
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary" * 4)
    (repo / "run.sh").write_text("echo run\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "f.txt").write_text("in sub\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "c1")
    c1 = git(repo, "rev-parse", "HEAD").strip()
    (repo / "lines.txt").write_text(LINES.replace("line 15\n", "line fifteen\n"))
    patch3 = git(repo, "diff", "--full-index")
    git(repo, "checkout", "-q", "--", "lines.txt")
    (repo / "lines.txt").write_text(LINES.replace("line 12\n", "line twelve\n"))
    git(repo, "commit", "-qam", "c2")
    c2 = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", c1)
    git(repo, "branch", "-f", "main", c1)
    git(repo, "checkout", "-q", "main")
    return Origin(repo, c1, c2, patch3)


@dataclass
class HostSecret:
    folder: Path  # a host folder with a secret file
    repo: Path  # a host repository whose only commit holds the secret
    commit: str
    text: str


@pytest.fixture
def host_secret(tmp_path) -> HostSecret:
    text = f"HOSTSECRET-{uuid.uuid4().hex}"
    folder = tmp_path / "hostfolder"
    folder.mkdir()
    (folder / "secret.txt").write_text(text + "\n")
    repo = tmp_path / "hostrepo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "secret.txt").write_text(text + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "secret")
    return HostSecret(folder, repo, git(repo, "rev-parse", "HEAD").strip(), text)


class _GitHTTP(BaseHTTPRequestHandler):
    """Smart HTTP through `git http-backend`, behind Basic auth (401 without the right credentials)."""

    root = ""
    credentials = ("", "")

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        want = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": self.root, "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "REMOTE_USER": self.credentials[0],
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, rest = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.split(b"\r\n"):
            key, _, value = line.decode().partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)


@pytest.fixture
def http_git(tmp_path, origin):
    """(base URL, user, password) of a loopback smart-HTTP server holding origin as /repo.git."""
    root = tmp_path / "served"
    root.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(origin.path), str(root / "repo.git"))
    handler = type("H", (_GitHTTP,), {"root": str(root), "credentials": ("alice", "s3cr3t-T0KEN")})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", "alice", "s3cr3t-T0KEN"
    finally:
        server.shutdown()
        server.server_close()


# -- payloads --------------------------------------------------------------------------------------

# Written into the tree by bash run in it (on the host, or at /testbed in a sandbox). {T}: the host path of
# the tree (config values name host paths: that is where host git would run them), {N}: payload name,
# {P}: its script (writes marker {M}), {ORIGIN}: the origin repository, {HTTP}: a server that answers 401.
PRELUDE = """set -e
cfg() { git config --file .git/config "$@"; }
cat > .git/p-{N}.sh <<'EOS'
#!/bin/sh
echo ran >> {M}
{TAIL}
EOS
chmod +x .git/p-{N}.sh
"""

HOOKS = "post-checkout pre-commit post-commit post-index-change reference-transaction pre-auto-gc post-merge"


@dataclass(frozen=True)
class Payload:
    name: str
    script: str
    trigger: str  # naive host git in the tree that runs the payload ("PTY:" prefix: on a terminal)
    cat: bool = False  # the script must pass its input through (filters, textconv, pager)
    remote: bool = False  # sets the tree's origin (one per tree)


PAYLOADS = [
    Payload("filter-clean", "cfg filter.{N}.clean {P}\necho '* filter={N}' > .gitattributes",
            "echo t >> lines.txt; git add -A", cat=True),
    Payload("filter-smudge", "cfg filter.{N}.smudge {P}\necho '* filter={N}' > .gitattributes",
            "rm -f lines.txt; git checkout -- lines.txt", cat=True),
    Payload("filter-process", "cfg filter.{N}.process {P}\necho '* filter={N}' > .gitattributes",
            "echo t >> lines.txt; git add -A"),
    Payload("fsmonitor", "cfg core.fsmonitor {P}", "git status"),
    Payload("textconv", "cfg diff.{N}.textconv {P}\necho '* diff={N}' > .gitattributes",
            "echo t >> lines.txt; git diff", cat=True),
    Payload("diff-external", "cfg diff.external {P}", "echo t >> lines.txt; git diff"),
    Payload("diff-command", "cfg diff.{N}.command {P}\necho '* diff={N}' > .gitattributes",
            "echo t >> lines.txt; git diff"),
    Payload("merge-driver", "cfg merge.{N}.driver '{P} %O %A %B'\necho '* merge={N}' > .gitattributes",
            "git checkout -q -f {C2} && git apply --3way {PATCH3}"),
    Payload("hooks-path", "mkdir -p .git/evilhooks\nfor h in " + HOOKS + "; do cp .git/p-{N}.sh .git/evilhooks/$h; done\n"
            "cfg core.hooksPath {T}/.git/evilhooks", "git checkout -q -f HEAD"),
    Payload("hooks-default", "mkdir -p .git/hooks\nfor h in " + HOOKS + "; do cp .git/p-{N}.sh .git/hooks/$h; done",
            "git checkout -q -f HEAD"),
    Payload("pager", "cfg core.pager {P}\ncfg pager.log true", "PTY:git log -1", cat=True),
    Payload("alias", "cfg alias.lc '!{P}'", "git lc"),
    Payload("include-path", "printf '[core]\\n\\tfsmonitor = {P}\\n' > .git/evil-{N}.cfg\ncfg include.path evil-{N}.cfg",
            "git status"),
    Payload("include-if", "printf '[filter \"{N}\"]\\n\\tclean = {P}\\n' > .git/evil-{N}.cfg\n"
            "cfg includeIf.gitdir:/.path evil-{N}.cfg\necho '* filter={N}' > .gitattributes",
            "echo t >> lines.txt; git add -A", cat=True),
    Payload("attributes-file", "printf '* filter={N}\\n' > .git/attrs-{N}\ncfg core.attributesFile {T}/.git/attrs-{N}\n"
            "cfg filter.{N}.clean {P}", "echo t >> lines.txt; git add -A", cat=True),
    Payload("info-attributes", "mkdir -p .git/info\nprintf '* filter={N}\\n' > .git/info/attributes\n"
            "cfg filter.{N}.clean {P}", "echo t >> lines.txt; git add -A", cat=True),
    Payload("ssh-command", "cfg remote.origin.url ssh://example.invalid/x.git\ncfg core.sshCommand {P}",
            "git fetch -q origin", remote=True),
    Payload("upload-pack", "cfg remote.origin.url {ORIGIN}\ncfg remote.origin.uploadpack {P}",
            "git fetch -q origin", remote=True),
    Payload("ext-protocol", "cfg protocol.ext.allow always\ncfg remote.origin.url ext::{P}",
            "git fetch -q origin", remote=True),
    Payload("git-proxy", "cfg core.gitProxy {P}\ncfg remote.origin.url git://example.invalid/x.git",
            "git fetch -q origin", remote=True),
    Payload("askpass", "cfg core.askPass {P}\ncfg remote.origin.url {HTTP}/auth/x.git",
            "git fetch -q origin", remote=True),
    Payload("credential-helper", "cfg credential.helper '!{P}'\ncfg remote.origin.url {HTTP}/auth/x.git",
            "git fetch -q origin", remote=True),
]


def render(payload: Payload, tree: Path, markers: Path, values: dict[str, str]) -> str:
    subs = {"{TAIL}": 'exec cat "$@"' if payload.cat else "exit 0", "{P}": "{T}/.git/p-{N}.sh",
            "{M}": str(markers / payload.name), "{T}": str(tree), "{N}": payload.name.replace("-", ""), **values}
    return substitute(PRELUDE + payload.script + "\n", subs)


def substitute(text: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():  # in order: {P} expands to {T} and {N}
        text = text.replace(key, value)
    return text


def values_for(origin: Origin, http_url: str, tmp_path: Path) -> dict[str, str]:
    patch_file = tmp_path / "patch3.diff"
    patch_file.write_text(origin.patch3)
    return {"{ORIGIN}": str(origin.path), "{HTTP}": http_url, "{C2}": origin.c2, "{PATCH3}": str(patch_file)}


def run_naive(tree: Path, command: str) -> None:
    """Plain git, the way host code used to run it (repository config obeyed)."""
    if command.startswith("PTY:"):
        master, slave = pty.openpty()
        try:
            subprocess.run(command[4:].split(), cwd=tree, env=dict(NAIVE_ENV, TERM="dumb"), stdin=slave,
                           stdout=slave, stderr=slave, timeout=30)
        finally:
            os.close(master)
            os.close(slave)
        return
    subprocess.run(["bash", "-c", command], cwd=tree, env=NAIVE_ENV, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


# -- what the host does with a workspace -----------------------------------------------------------

BAD_PATCH = ("diff --git a/lines.txt b/lines.txt\n--- a/lines.txt\n+++ b/lines.txt\n"
             "@@ -1,3 +1,3 @@\n-nothing\n-like\n-this\n+x\n+y\n+z\n")


def exercise(tree: Path, origin: Origin) -> dict[str, object]:
    """Every host operation on a workspace; the result or the exception of each."""
    out: dict[str, object] = {}

    def step(name, fn):
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a payload may break the old code in any way
            out[name] = exc

    (tree / "notes.txt").write_text("a new file\n")
    step("open", lambda: GitWorkspace(tree))
    ws = out["open"] if isinstance(out["open"], GitWorkspace) else None
    if ws is None:
        return out
    step("extract", ws.extract_patch)
    step("list", lambda: [f.rel for f in Workspace(tree).list_files()])
    step("rev_parse", lambda: ws.rev_parse("HEAD"))
    step("checkout", lambda: ws.checkout(origin.c2))
    step("apply3", lambda: ws.apply_patch(origin.patch3))
    step("branch", lambda: ws.create_branch("agent/x"))
    step("fetch", lambda: ws.checkout("1" * 40))
    step("apply_bad", lambda: ws.apply_patch(BAD_PATCH, raise_on_failure=False))
    step("extract2", ws.extract_patch)
    step("reopen", lambda: GitWorkspace(tree).base_commit)
    return out


def assert_host_operations_worked(out: dict[str, object], origin: Origin) -> None:
    """The payloads must not break the host side either."""
    for name in ("open", "extract", "list", "rev_parse", "checkout", "apply3", "branch", "apply_bad", "extract2",
                 "reopen"):
        assert not isinstance(out[name], Exception), f"{name}: {out[name]!r}"
    assert isinstance(out["fetch"], WorkspaceError)
    assert out["extract"].verified and "notes.txt" in out["extract"].files
    assert out["apply3"].method == "git apply --3way"
    assert out["apply_bad"].ok is False
    assert out["reopen"] == origin.c2
    assert "notes.txt" in out["list"] and "lines.txt" in out["list"]


def marker_names(markers: Path) -> list[str]:
    return sorted(p.name for p in markers.iterdir())


# -- config, hooks and attributes written into the tree's .git -------------------------------------


def test_all_payloads_in_one_tree_run_nothing_on_the_host(origin, http_git, tmp_path):
    """The quick version: every payload in one tree; each remote payload in turn for the fetching step."""
    markers = tmp_path / "markers"
    markers.mkdir()
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    values = values_for(origin, http_git[0], tmp_path)
    for payload in [p for p in PAYLOADS if not p.remote]:
        subprocess.run(["bash", "-c", render(payload, ws.path, markers, values)], cwd=ws.path, check=True)
    out = exercise(ws.path, origin)
    assert marker_names(markers) == []
    assert_host_operations_worked(out, origin)
    for payload in [p for p in PAYLOADS if p.remote]:
        subprocess.run(["bash", "-c", render(payload, ws.path, markers, values)], cwd=ws.path, check=True)
        with pytest.raises(WorkspaceError, match="not found"):
            ws.checkout("1" * 40)  # fetches from the private repository's origin, not the tree's
        assert marker_names(markers) == [], payload.name


@pytest.mark.slow
@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_payload_in_tree_git_runs_nothing_on_the_host(payload, origin, http_git, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    tree = ws.path
    values = values_for(origin, http_git[0], tmp_path)
    subprocess.run(["bash", "-c", render(payload, tree, markers, values)], cwd=tree, check=True)

    out = exercise(tree, origin)
    assert marker_names(markers) == [], f"host git ran the sandbox's {payload.name} payload"
    assert_host_operations_worked(out, origin)

    # The payload is live: git run the naive way in the same tree runs it.
    run_naive(tree, substitute(payload.trigger, values))
    assert marker_names(markers) == [payload.name], f"payload {payload.name} is dead; the test proves nothing"


def test_core_worktree_pointing_at_a_host_folder_leaks_nothing(origin, host_secret, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    before = snapshot(host_secret.folder)
    git(ws.path, "config", "--file", ".git/config", "core.worktree", str(host_secret.folder))

    out = exercise(ws.path, origin)
    assert snapshot(host_secret.folder) == before
    assert_no_leak(ws.path, out, host_secret)
    assert_host_operations_worked(out, origin)
    # Live: naive git now sees the host folder as the work tree.
    naive = subprocess.run(["git", "ls-files", "--others"], cwd=ws.path, env=NAIVE_ENV, capture_output=True, text=True)
    assert "secret.txt" in naive.stdout


def test_alternates_and_refs_to_host_objects_are_not_checked_out(origin, host_secret, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    (ws.path / ".git/objects/info").mkdir(parents=True, exist_ok=True)
    (ws.path / ".git/objects/info/alternates").write_text(str(host_secret.repo / ".git/objects") + "\n")
    (ws.path / ".git/refs/heads/evil").write_text(host_secret.commit + "\n")

    outcomes = []
    for attempt in (lambda: ws.checkout("evil"), lambda: ws.checkout(host_secret.commit),
                    lambda: ws.create_branch("b", start="evil"),
                    lambda: GitWorkspace(ws.path, base_commit=host_secret.commit)):
        try:
            outcomes.append(attempt())
        except WorkspaceError as exc:
            outcomes.append(exc)
    assert not (ws.path / "secret.txt").exists()
    assert all(isinstance(o, WorkspaceError) for o in outcomes), outcomes
    out = exercise(ws.path, origin)
    assert_no_leak(ws.path, out, host_secret)
    assert_host_operations_worked(out, origin)
    # Live: naive git reads the host repository's objects through the alternates file.
    naive = subprocess.run(["git", "cat-file", "-p", f"{host_secret.commit}:secret.txt"], cwd=ws.path,
                           env=NAIVE_ENV, capture_output=True, text=True)
    assert host_secret.text in naive.stdout


@pytest.mark.parametrize("how", ["gitfile", "symlink"])
def test_dot_git_redirected_to_a_host_repository_is_never_used(how, origin, host_secret, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    shutil.rmtree(ws.path / ".git")
    if how == "gitfile":
        (ws.path / ".git").write_text(f"gitdir: {host_secret.repo / '.git'}\n")
    else:
        os.symlink(host_secret.repo / ".git", ws.path / ".git")
    before = snapshot(host_secret.repo)
    (ws.path / "lines.txt").write_text(LINES.replace("line 3\n", "line three\n"))

    out = {}
    for name, fn in (("extract", ws.extract_patch), ("list", lambda: [f.rel for f in Workspace(ws.path).list_files()]),
                     ("reopen", lambda: GitWorkspace(ws.path).base_commit), ("checkout", lambda: ws.checkout(origin.c2)),
                     ("branch", lambda: ws.create_branch("agent/y")),
                     ("apply", lambda: ws.apply_patch(BAD_PATCH, raise_on_failure=False))):
        try:
            out[name] = fn()
        except WorkspaceError as exc:
            out[name] = exc
    assert snapshot(host_secret.repo) == before
    assert not (ws.path / "secret.txt").exists()
    patch = out["extract"]
    assert patch.verified and patch.files == ["lines.txt"] and patch.base_commit == origin.c1
    assert out["list"] == ["lines.txt", "logo.png", "run.sh", "sub/f.txt"]
    assert out["reopen"] == origin.c1
    assert "no longer a folder" in str(out["checkout"]) and "no longer a folder" in str(out["branch"])
    assert out["apply"].ok is False
    # Live: naive git in the tree works on the host repository.
    naive = subprocess.run(["git", "log", "--format=%s"], cwd=ws.path, env=NAIVE_ENV, capture_output=True, text=True)
    assert naive.stdout.strip() == "secret"


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.lstat().st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
            for p in sorted(folder.rglob("*"))}


def assert_no_leak(tree: Path, out: dict[str, object], secret: HostSecret) -> None:
    for name in ("extract", "extract2"):
        assert secret.text not in out[name].text
    for p in tree.rglob("*"):
        if p.is_file() and not p.is_symlink() and ".git" not in p.relative_to(tree).parts:
            assert secret.text.encode() not in p.read_bytes(), p
    # No object holding the secret in the tree's own object store (alternates left out: they are the attack).
    assert secret.text.encode() not in own_objects(tree / ".git" / "objects")


def own_objects(objects: Path) -> bytes:
    """Contents of every object stored in ``objects`` itself (loose and packed), read with a bare git."""
    copy = objects.parent.parent.with_name(objects.parent.parent.name + "-objects-copy")
    shutil.copytree(objects, copy, ignore=lambda d, names: ["alternates"] if d.endswith("info") else [])
    try:
        env = dict(NAIVE_ENV, GIT_OBJECT_DIRECTORY=str(copy), GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
        empty = copy / "empty.git"
        subprocess.run(["git", "init", "-q", "--bare", str(empty)], check=True, env=env)
        return subprocess.run(["git", "--git-dir", str(empty), "cat-file", "--batch-all-objects", "--batch"],
                              env=env, capture_output=True, check=True).stdout
    finally:
        shutil.rmtree(copy)


# -- symlinks the sandbox plants for apply_patch ---------------------------------------------------


def _far_past_atime(path: Path) -> None:
    # relatime updates the access time of a file read after its atime fell behind its mtime: any read shows.
    st = path.stat()
    os.utime(path, ns=(1_000_000_000, st.st_mtime_ns))


@pytest.mark.parametrize("change", ["modify", "create", "delete"])
def test_apply_patch_never_goes_through_a_symlinked_folder(change, origin, host_secret, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    secret = host_secret.folder / "secret.txt"
    # sub/ is tracked; the sandbox swaps it for a link to a host folder holding a file of the same name.
    shutil.rmtree(ws.path / "sub")
    os.symlink(host_secret.folder, ws.path / "sub")
    (host_secret.folder / "f.txt").write_text("in sub\n")
    patches = {
        # Context that matches neither file: the first method fails, the fallbacks are tried.
        "modify": "diff --git a/sub/f.txt b/sub/f.txt\n--- a/sub/f.txt\n+++ b/sub/f.txt\n@@ -1,2 +1,2 @@\n in sub\n-other\n+pwned\n",
        # git 2.39's `apply --3way` writes a new file through a symlinked folder (its "direct application").
        "create": "diff --git a/sub/new.txt b/sub/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/sub/new.txt\n@@ -0,0 +1 @@\n+pwned\n",
        "delete": "diff --git a/sub/f.txt b/sub/f.txt\ndeleted file mode 100644\n--- a/sub/f.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-in sub\n",
    }
    before = snapshot(host_secret.folder)
    for f in host_secret.folder.iterdir():
        _far_past_atime(f)
    atimes = {f.name: f.stat().st_atime_ns for f in host_secret.folder.iterdir()}

    result = ws.apply_patch(patches[change], raise_on_failure=False)

    assert sorted(p.name for p in host_secret.folder.iterdir()) == ["f.txt", "secret.txt"]  # none made or deleted
    assert {f.name: f.stat().st_atime_ns for f in host_secret.folder.iterdir()} == atimes  # none read
    assert snapshot(host_secret.folder) == before  # none changed
    assert secret.read_text() == host_secret.text + "\n"
    assert os.path.islink(ws.path / "sub")
    assert result.ok is False
    assert [a.method for a in result.attempts] == ["git apply", "git apply --3way", "patch --fuzz=3"]
    assert all("symlink" in a.output for a in result.attempts), result.summary()


def test_apply_patch_treats_a_planted_leaf_symlink_as_a_link(origin, host_secret, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    secret = host_secret.folder / "secret.txt"
    (ws.path / "run.sh").unlink()
    os.symlink(secret, ws.path / "run.sh")  # tracked file swapped for a link to a host file
    # The attacker even knows the host file's content: the patch's context matches it.
    patch = (f"diff --git a/run.sh b/run.sh\n--- a/run.sh\n+++ b/run.sh\n@@ -1 +1 @@\n-{host_secret.text}\n"
             "+pwned\n")
    before = snapshot(host_secret.folder)
    _far_past_atime(secret)
    atime = secret.stat().st_atime_ns
    result = ws.apply_patch(patch, raise_on_failure=False)
    assert secret.stat().st_atime_ns == atime
    assert snapshot(host_secret.folder) == before
    assert result.ok is False and os.readlink(ws.path / "run.sh") == str(secret)


def test_apply_patch_writes_no_file_beyond_a_symlink_the_patch_itself_creates(origin, host_secret, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    target = str(host_secret.folder)
    patch = (f"diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+{target}\n"
             "\\ No newline at end of file\n"
             "diff --git a/l/z b/l/z\nnew file mode 100644\n--- /dev/null\n+++ b/l/z\n@@ -0,0 +1 @@\n+pwned\n")
    before = snapshot(host_secret.folder)
    result = ws.apply_patch(patch, raise_on_failure=False)
    assert result.ok is False
    assert snapshot(host_secret.folder) == before
    assert not os.path.lexists(ws.path / "l")


def test_apply_patch_refuses_paths_that_leave_the_tree_or_enter_dot_git(origin, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    outside = tmp_path / "outside.txt"
    for path in (".git/hooks/post-checkout", "../outside.txt", "sub/../../outside.txt"):
        patch = f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+pwned\n"
        with pytest.raises(PatchApplyError) as e:
            ws.apply_patch(patch)
        assert not outside.exists()
        assert not (ws.path / ".git/hooks/post-checkout").exists()
        assert all(a.output.startswith("refused:") for a in e.value.result.attempts), path


def test_apply_patch_keeps_links_as_links_and_writes_results_as_the_folder_owner(origin, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    os.symlink("lines.txt", ws.path / "alias.txt")  # a leaf symlink the patch does not touch
    result = ws.apply_patch(origin.patch3)  # applies to c1 directly
    assert result.method == "git apply"
    assert os.path.islink(ws.path / "alias.txt")
    assert "line fifteen" in (ws.path / "lines.txt").read_text()
    st = (ws.path / "lines.txt").stat()
    parent = ws.path.stat()
    assert (st.st_uid, st.st_gid) == (parent.st_uid, parent.st_gid)


# -- extract_patch cases the issue found untested ---------------------------------------------------


def test_renames_binaries_deletions_new_files_and_modes_replay_on_a_clean_checkout(origin, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    w = ws.path
    (w / "img").mkdir()
    os.rename(w / "logo.png", w / "img" / "logo.png")  # binary, renamed unchanged
    os.rename(w / "lines.txt", w / "renamed.txt")  # renamed with an edit
    (w / "renamed.txt").write_text(LINES.replace("line 20\n", "line twenty\n"))
    (w / "sub" / "f.txt").unlink()  # deleted
    (w / "new.py").write_text("print('new')\n")  # new
    os.chmod(w / "run.sh", 0o755)  # mode change
    p = ws.extract_patch()
    assert p.verified
    assert "rename from logo.png\nrename to img/logo.png" in p.text and "similarity index 100%" in p.text
    assert "rename from lines.txt\nrename to renamed.txt" in p.text
    assert "deleted file mode 100644" in p.text and "new file mode 100644" in p.text
    assert "old mode 100644\nnew mode 100755" in p.text
    assert p.excluded == []

    fresh = GitWorkspace.clone(origin.path, tmp_path / "fresh")
    assert fresh.apply_patch(p.text).method == "git apply"
    assert (fresh.path / "img" / "logo.png").read_bytes() == (origin.path / "logo.png").read_bytes()
    assert not (fresh.path / "logo.png").exists() and not (fresh.path / "lines.txt").exists()
    assert (fresh.path / "renamed.txt").read_text() == (w / "renamed.txt").read_text()
    assert not (fresh.path / "sub").exists()  # its only file was deleted: the folder goes too
    assert (fresh.path / "new.py").read_text() == "print('new')\n"
    assert os.stat(fresh.path / "run.sh").st_mode & stat.S_IXUSR


def test_a_binary_renamed_and_changed_is_left_out_whole(origin, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    os.rename(ws.path / "logo.png", ws.path / "icon.png")
    (ws.path / "icon.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00changed" * 4)
    (ws.path / "run.sh").write_text("echo changed\n")
    p = ws.extract_patch()
    assert {(e.path, e.reason) for e in p.excluded} == {("logo.png", "binary"), ("icon.png", "binary")}
    assert "png" not in p.text and p.files == ["run.sh"]
    fresh = GitWorkspace.clone(origin.path, tmp_path / "fresh")
    fresh.apply_patch(p.text)
    assert (fresh.path / "logo.png").exists() and not (fresh.path / "icon.png").exists()


# -- set-up: where the private repository is, what the tree's .git says ----------------------------


def test_private_repository_lives_outside_the_tree_and_the_tree_needs_none_of_it(origin, tmp_path):
    from loopcoder.runtime.hostgit import private_git_dir

    ws = GitWorkspace.clone(origin.path, tmp_path / "ws", branch="agent/fix")
    assert ws.git_dir == private_git_dir(ws.path) == tmp_path / "ws.loopcoder-git"
    assert stat.S_IMODE(ws.git_dir.stat().st_mode) == 0o700
    # git inside the tree works on its own: history, branch, clean status, no path to the private repo.
    assert git(ws.path, "status", "--porcelain") == ""
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == "agent/fix"
    assert git(ws.path, "remote", "get-url", "origin").strip() == str(origin.path)
    assert str(ws.git_dir) not in (ws.path / ".git" / "config").read_text()
    assert not (ws.path / ".git" / "objects" / "info" / "alternates").exists()
    # Objects are copies: the sandbox user gets the tree's files and must not share inodes with the host's.
    private_inodes = {p.stat().st_ino for p in (ws.git_dir / "objects").rglob("*") if p.is_file()}
    assert not private_inodes & {p.stat().st_ino for p in (ws.path / ".git").rglob("*") if p.is_file()}


def test_checkout_after_set_up_updates_the_trees_git_without_running_git_on_it(origin, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    (ws.path / "sub" / "f.txt").write_text("sandbox edit\n")  # tracked, modified: a checkout resets it
    (ws.path / "untracked.txt").write_text("kept\n")
    assert ws.checkout(origin.c2) == origin.c2
    assert ws.base_commit == origin.c2
    assert (ws.path / "lines.txt").read_text() == LINES.replace("line 12\n", "line twelve\n")
    assert (ws.path / "sub" / "f.txt").read_text() == "in sub\n"
    assert (ws.path / "untracked.txt").read_text() == "kept\n"
    assert git(ws.path, "rev-parse", "HEAD").strip() == origin.c2
    assert git(ws.path, "status", "--porcelain") == "?? untracked.txt\n"
    ws.create_branch("agent/fix", start=origin.c1)
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == "agent/fix"
    assert git(ws.path, "rev-parse", "HEAD").strip() == origin.c1
    assert (ws.path / "lines.txt").read_text() == LINES
    with pytest.raises(WorkspaceError, match="not a valid branch name"):
        ws.create_branch("bad..name")


def test_checkout_of_a_commit_only_origin_has_gives_the_tree_its_objects(origin, tmp_path):
    (origin.path / "later.txt").write_text("later\n")
    git(origin.path, "add", "later.txt")
    git(origin.path, "commit", "-qm", "later")
    later = git(origin.path, "rev-parse", "HEAD").strip()
    git(origin.path, "reset", "-q", "--hard", origin.c1)  # unreachable from any ref: the clone lacks it
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    assert ws.checkout(later) == later
    assert (ws.path / "later.txt").read_text() == "later\n"
    assert git(ws.path, "log", "-1", "--format=%s").strip() == "later"
    assert git(ws.path, "status", "--porcelain") == ""


def test_a_failed_clone_leaves_nothing_behind(origin, tmp_path):
    with pytest.raises(WorkspaceError, match="not found"):
        GitWorkspace.clone(origin.path, tmp_path / "ws", commit="0" * 40)
    assert not (tmp_path / "ws").exists() and not (tmp_path / "ws.loopcoder-git").exists()
    assert GitWorkspace.clone(origin.path, tmp_path / "ws", commit=origin.c2).base_commit == origin.c2


def test_opening_a_plain_repository_makes_its_private_copy_once(origin, tmp_path):
    ws = GitWorkspace(origin.path)
    assert ws.base_commit == origin.c1 and ws.git_dir.is_dir()
    # Re-opening reads the private repository only: a HEAD moved inside the tree's .git is not believed.
    git(origin.path, "checkout", "-q", origin.c2)
    assert GitWorkspace(origin.path).base_commit == origin.c1


def test_a_private_repository_owned_by_someone_else_is_refused(origin, tmp_path):
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    os.chmod(ws.git_dir, 0o777)
    with pytest.raises(WorkspaceError, match="writable by other users"):
        GitWorkspace(ws.path)


def test_private_git_root_setting_places_the_repository_there(origin, tmp_path):
    from loopcoder.runtime.config import WorkspaceConfig

    cfg = WorkspaceConfig(private_git_root=tmp_path / "private")
    ws = GitWorkspace.clone(origin.path, tmp_path / "ws", config=cfg)
    assert ws.git_dir.parent == tmp_path / "private" and ws.git_dir.name.startswith("ws-")
    assert not (tmp_path / "ws.loopcoder-git").exists()
    assert GitWorkspace(ws.path, config=cfg).git_dir == ws.git_dir
    with pytest.raises(WorkspaceError, match="inside the workspace"):
        GitWorkspace.clone(origin.path, tmp_path / "ws2", config=WorkspaceConfig(private_git_root=tmp_path / "ws2"))


def test_cloning_a_used_workspace_reads_its_private_repository(origin, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    first = GitWorkspace.clone(origin.path, tmp_path / "first")
    payload = PAYLOADS[[p.name for p in PAYLOADS].index("upload-pack")]
    subprocess.run(["bash", "-c", render(payload, first.path, markers, {"{ORIGIN}": str(origin.path)})],
                   cwd=first.path, check=True)
    second = GitWorkspace.clone(first.path, tmp_path / "second")
    assert second.base_commit == origin.c1
    assert marker_names(markers) == []


# -- credentials in clone URLs ----------------------------------------------------------------------


def test_clone_with_credentials_keeps_them_out_of_the_tree(http_git, tmp_path):
    url, user, password = http_git
    authed = url.replace("http://", f"http://{user}:{password}@") + "/repo.git"
    ws = GitWorkspace.clone(authed, tmp_path / "ws")
    assert (ws.path / "lines.txt").read_text() == LINES
    assert git(ws.path, "remote", "get-url", "origin").strip() == f"{url}/repo.git"
    for p in (ws.path / ".git").rglob("*"):
        if p.is_file():
            assert password.encode() not in p.read_bytes(), p
    # The private repository keeps the URL it needs to fetch missing commits later.
    assert password in (ws.git_dir / "config").read_text()


@pytest.mark.parametrize("kind", ["wrong password", "missing repository", "closed port", "git protocol"])
def test_clone_errors_never_show_credentials(kind, http_git, tmp_path):
    url, user, password = http_git
    host = url.removeprefix("http://")
    token = "tok" + uuid.uuid4().hex
    source = {
        "wrong password": f"http://{user}:{token}@{host}/repo.git",
        "missing repository": f"http://{user}:{password}@{host}/nope.git",
        "closed port": f"http://{user}:{token}@127.0.0.1:1/repo.git",
        "git protocol": f"git://{user}:{token}@127.0.0.1:1/repo.git",  # git echoes user:token@host here
    }[kind]
    secret = password if kind == "missing repository" else token
    with pytest.raises(WorkspaceError) as e:
        GitWorkspace.clone(source, tmp_path / "ws")
    message = str(e.value)
    assert "git clone" in message and "failed" in message and "\n" not in message
    assert secret not in message and "***" in message
    assert not (tmp_path / "ws.loopcoder-git").exists()


def test_redact_hides_userinfo_in_any_form():
    from loopcoder.runtime.hostgit import redact, strip_credentials

    src = "https://bob:p%40ss%2Fword@example.com/x.git"
    assert strip_credentials(src) == "https://example.com/x.git"
    text = "fatal: unable to access 'https://bob:p%40ss%2Fword@example.com/x.git/': p@ss/word bob:p@ss/word@example"
    shown = redact(text, src)
    assert "p%40ss" not in shown and "p@ss/word" not in shown
    assert shown.startswith("fatal: unable to access 'https://***@example.com/x.git/'")


# -- the same attacks from inside a real sandbox ---------------------------------------------------


@pytest.fixture
def sandboxed_workspace(docker_client, base_image, small_config, origin, tmp_path):
    """(workspace, sandbox): a clone handed to a running DockerSandbox (its user owns the tree)."""
    from loopcoder.runtime.docker_sandbox import DockerSandbox

    ws = GitWorkspace.clone(origin.path, tmp_path / "ws")
    with DockerSandbox(ws.path, config=small_config, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}) as sb:
        yield ws, sb


def _in_sandbox(sb, script: str) -> None:
    """Run a bash script in /testbed as the sandbox user (in its own bash: `set -e` stays there)."""
    name = f"/tmp/payload-{uuid.uuid4().hex[:8]}.sh"
    sb.write_file(name, script)
    res = sb.exec(f"bash {name}", timeout=60, workdir="/testbed")
    assert res.exit_code == 0, res.output


@pytest.mark.docker
def test_sandbox_written_git_config_runs_nothing_on_the_host(sandboxed_workspace, origin, http_git, tmp_path):
    ws, sb = sandboxed_workspace
    markers = tmp_path / "markers"
    markers.mkdir()
    values = values_for(origin, http_git[0], tmp_path)
    # Every payload at once, with one remote-based payload (the tree has one origin).
    chosen = [p for p in PAYLOADS if not p.remote] + [p for p in PAYLOADS if p.name == "upload-pack"]
    for payload in chosen:
        _in_sandbox(sb, render(payload, ws.path, markers, values))
    assert sb.exec("stat -c %u /testbed/.git/config").output.strip() == "1000"  # written by the sandbox user

    out = exercise(ws.path, origin)
    assert marker_names(markers) == []
    assert_host_operations_worked(out, origin)
    # Git inside the sandbox still works on what the host left in its .git.
    res = sb.exec("cd /testbed && git -c core.fsmonitor=false log -1 --format=%H && git -c core.fsmonitor=false "
                  "rev-parse --abbrev-ref HEAD", timeout=60)
    assert res.output.split() == [origin.c2, "agent/x"], res.output


@pytest.mark.docker
def test_sandbox_pointing_git_at_host_paths_leaks_nothing(sandboxed_workspace, origin, host_secret, tmp_path):
    ws, sb = sandboxed_workspace
    before = snapshot(host_secret.folder)
    _in_sandbox(sb, f"git config --file .git/config core.worktree {host_secret.folder} && "
                    f"mkdir -p .git/objects/info && echo {host_secret.repo}/.git/objects > .git/objects/info/alternates"
                    f" && echo {host_secret.commit} > .git/refs/heads/evil")
    try:
        evil = ws.checkout("evil")
    except WorkspaceError as exc:
        evil = exc
    assert not (ws.path / "secret.txt").exists()
    assert isinstance(evil, WorkspaceError)
    out = exercise(ws.path, origin)
    assert snapshot(host_secret.folder) == before
    assert_no_leak(ws.path, out, host_secret)
    assert_host_operations_worked(out, origin)
    res = sb.exec(f"cd /testbed && grep -rl {host_secret.text} . ; git cat-file --batch-all-objects --batch "
                  f"2>/dev/null | grep -c {host_secret.text}", timeout=60)
    assert res.output.strip() == "0", res.output


@pytest.mark.docker
def test_sandbox_symlink_swap_cannot_make_apply_patch_touch_host_files(sandboxed_workspace, origin, host_secret):
    ws, sb = sandboxed_workspace
    (host_secret.folder / "f.txt").write_text("in sub\n")
    before = snapshot(host_secret.folder)
    _in_sandbox(sb, f"rm -rf sub && ln -s {host_secret.folder} sub && rm -rf .git && "
                    f"printf 'gitdir: {host_secret.repo}/.git\\n' > .git")
    patch = ("diff --git a/sub/f.txt b/sub/f.txt\ndeleted file mode 100644\n--- a/sub/f.txt\n+++ /dev/null\n"
             "@@ -1 +0,0 @@\n-in sub\n"
             "diff --git a/sub/new.txt b/sub/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/sub/new.txt\n"
             "@@ -0,0 +1 @@\n+pwned\n")
    for f in host_secret.folder.iterdir():
        _far_past_atime(f)
    atimes = {f.name: f.stat().st_atime_ns for f in host_secret.folder.iterdir()}
    result = ws.apply_patch(patch, raise_on_failure=False)
    assert {f.name: f.stat().st_atime_ns for f in host_secret.folder.iterdir()} == atimes  # nothing read
    assert snapshot(host_secret.folder) == before
    assert not result.ok and all("symlink" in a.output for a in result.attempts), result.summary()
    p = ws.extract_patch()
    assert host_secret.text not in p.text and "new file mode 120000" in p.text  # sub is now a link, recorded as one
    with pytest.raises(WorkspaceError, match="no longer a folder"):
        ws.checkout(origin.c2)
