"""Git workspaces: clone sources, extract_patch (new, deleted, renamed, binary, CRLF, nested .git,
symlinks), apply_patch's three methods (git apply, --3way, patch --fuzz)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from git_support import git
from loopcoder.runtime.config import WorkspaceConfig
from loopcoder.runtime.errors import PatchApplyError, WorkspaceError
from loopcoder.runtime.workspace import GitWorkspace

LINES = "".join(f"line {i}\n" for i in range(1, 31))


@pytest.fixture
def origin(tmp_path) -> Path:
    """A repository with one commit: text, CRLF, to-delete, to-rename and binary files."""
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "lines.txt").write_text(LINES)
    (repo / "crlf.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    (repo / "gone.txt").write_text("delete me\n")
    (repo / "old_name.py").write_text("def f():\n    return 1\n" * 4)
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    return repo


def tree_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts}


def test_clone_from_path_checks_out_commit_and_branch(origin, tmp_path):
    first = git(origin, "rev-parse", "HEAD").strip()
    (origin / "lines.txt").write_text("changed\n")
    git(origin, "commit", "-qam", "second")
    ws = GitWorkspace.clone(origin, tmp_path / "ws", commit=first, branch="agent/fix")
    assert ws.base_commit == first
    assert (ws.path / "lines.txt").read_text() == LINES
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == "agent/fix"


def test_clone_from_bare_repository_and_file_url(origin, tmp_path):
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    a = GitWorkspace.clone(bare, tmp_path / "a")
    b = GitWorkspace.clone(f"file://{bare}", tmp_path / "b")
    assert a.base_commit == b.base_commit == git(origin, "rev-parse", "HEAD").strip()
    with pytest.raises(WorkspaceError, match="bare repository"):
        GitWorkspace(bare)


def test_clone_from_git_url_over_loopback(origin, tmp_path):
    """A real network URL, served by `git daemon` on 127.0.0.1 only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(["git", "daemon", "--listen=127.0.0.1", f"--port={port}", "--export-all",
                               "--reuseaddr", f"--base-path={tmp_path}", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        ws = GitWorkspace.clone(f"git://127.0.0.1:{port}/origin", tmp_path / "net")
        assert (ws.path / "lines.txt").read_text() == LINES
    finally:
        daemon.terminate()
        daemon.wait()


def test_clone_errors_are_one_line(tmp_path):
    with pytest.raises(WorkspaceError, match="git clone .* failed") as e:
        GitWorkspace.clone(tmp_path / "nope", tmp_path / "ws")
    assert "\n" not in str(e.value)


def test_checkout_unknown_commit_is_reported(origin, tmp_path):
    ws = GitWorkspace.clone(origin, tmp_path / "ws")
    with pytest.raises(WorkspaceError, match="not found"):
        ws.checkout("0" * 40)


def test_empty_patch_is_reported_as_empty(origin, tmp_path):
    ws = GitWorkspace.clone(origin, tmp_path / "ws")
    p = ws.extract_patch()
    assert p.empty and p.text == "" and p.files == []


def make_changes(ws: GitWorkspace) -> None:
    w = ws.path
    (w / "lines.txt").write_text(LINES.replace("line 15\n", "line fifteen\n"))
    (w / "crlf.txt").write_bytes(b"one\r\nTWO\r\nthree\r\n")
    (w / "gone.txt").unlink()
    os.rename(w / "old_name.py", w / "new_name.py")
    (w / "pkg").mkdir()
    (w / "pkg" / "new module.py").write_text("print('new')\n")
    (w / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00changed")
    (w / "data.bin").write_bytes(bytes(range(256)))
    (w / "vendored").mkdir()
    git(w / "vendored", "init", "-q")
    (w / "vendored" / "x.py").write_text("x = 1\n")
    (w / "build.log").write_text("noise\n")


def test_extract_patch_covers_new_deleted_renamed_crlf_and_excludes_the_rest(origin, tmp_path):
    ws = GitWorkspace.clone(origin, tmp_path / "ws", config=WorkspaceConfig(exclude_paths=["*.log"]))
    make_changes(ws)
    p = ws.extract_patch()
    assert p.verified and not p.empty and p.text.endswith("\n")
    assert "new file mode 100644" in p.text and "+++ b/pkg/new module.py" in p.text
    assert "deleted file mode 100644" in p.text and "--- a/gone.txt" in p.text
    assert "rename from old_name.py\nrename to new_name.py" in p.text
    assert "-two\r\n+TWO\r\n" in p.text  # CRLF kept byte for byte
    excluded = {(e.path, e.reason) for e in p.excluded}
    assert excluded == {("logo.png", "binary"), ("data.bin", "binary"), ("vendored", "nested git repository"),
                        ("build.log", "configured exclusion")}
    assert "logo.png" not in p.text and "vendored" not in p.text and "build.log" not in p.text
    assert sorted(p.files) == ["crlf.txt", "gone.txt", "lines.txt", "new_name.py", "pkg/new module.py"]
    # The workspace's own index is untouched: nothing got staged.
    assert git(ws.path, "diff", "--cached", "--name-only") == ""


def test_extracted_patch_replays_on_a_fresh_clone(origin, tmp_path):
    ws = GitWorkspace.clone(origin, tmp_path / "ws")
    make_changes(ws)
    p = ws.extract_patch(exclude=["*.log"])
    fresh = GitWorkspace.clone(origin, tmp_path / "fresh")
    result = fresh.apply_patch(p.text)
    assert result.ok and result.method == "git apply"
    want = {k: v for k, v in tree_files(ws.path).items()
            if k not in ("logo.png", "data.bin", "build.log") and not k.startswith("vendored")}
    got = {k: v for k, v in tree_files(fresh.path).items() if k != "logo.png"}
    assert got == want
    assert (fresh.path / "crlf.txt").read_bytes() == b"one\r\nTWO\r\nthree\r\n"


def test_symlink_to_outside_is_recorded_as_a_link_never_read(origin, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET\n")
    ws = GitWorkspace.clone(origin, tmp_path / "ws")
    os.symlink(secret, ws.path / "escape")
    p = ws.extract_patch()
    assert "new file mode 120000" in p.text and f"+{secret}\n" in p.text
    assert "TOPSECRET" not in p.text


def test_apply_falls_back_to_three_way_merge(origin, tmp_path):
    ws = GitWorkspace.clone(origin, tmp_path / "ws")
    (ws.path / "lines.txt").write_text(LINES.replace("line 15\n", "line fifteen\n"))
    patch = ws.extract_patch().text
    # Upstream moved on: line 12 (context of the hunk) changed, so a plain git apply fails; a 3-way
    # merge works (the preimage blob is in this history and the changes do not touch).
    (origin / "lines.txt").write_text(LINES.replace("line 12\n", "line twelve\n"))
    git(origin, "commit", "-qam", "upstream")
    target = GitWorkspace.clone(origin, tmp_path / "target")
    result = target.apply_patch(patch)
    assert result.method == "git apply --3way"
    assert [a.ok for a in result.attempts] == [False, True]
    assert (target.path / "lines.txt").read_text() == LINES.replace("line 12\n", "line twelve\n").replace(
        "line 15\n", "line fifteen\n")


def test_apply_falls_back_to_patch_with_fuzz(origin, tmp_path):
    # The patch comes from a different history (its preimage blob is unknown here, so --3way cannot
    # work) and its outermost context line differs from the target: only patch --fuzz applies it.
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / "lines.txt").write_text(LINES.replace("line 12\n", "line twelve\n"))
    git(other, "add", "-A")
    git(other, "commit", "-qm", "x")
    ows = GitWorkspace(other)
    (other / "lines.txt").write_text(LINES.replace("line 12\n", "line twelve\n").replace("line 15\n", "line 15!\n"))
    patch = ows.extract_patch().text
    target = GitWorkspace.clone(origin, tmp_path / "target")
    result = target.apply_patch(patch)
    assert result.method == "patch --fuzz=3", result.summary()
    assert [a.method for a in result.attempts] == ["git apply", "git apply --3way", "patch --fuzz=3"]
    assert (target.path / "lines.txt").read_text() == LINES.replace("line 15\n", "line 15!\n")
    assert not list(target.path.glob("*.orig")) and not list(target.path.glob("*.rej"))


def test_patch_that_applies_nowhere_says_why_and_leaves_the_tree_alone(origin, tmp_path):
    target = GitWorkspace.clone(origin, tmp_path / "target")
    before = tree_files(target.path)
    bad = ("diff --git a/lines.txt b/lines.txt\n--- a/lines.txt\n+++ b/lines.txt\n"
           "@@ -1,3 +1,3 @@\n-nothing\n-like\n-this\n+x\n+y\n+z\n")
    with pytest.raises(PatchApplyError) as e:
        target.apply_patch(bad)
    assert "git apply:" in str(e.value) and "git apply --3way:" in str(e.value) and "patch --fuzz=3:" in str(e.value)
    assert [a.ok for a in e.value.result.attempts] == [False, False, False]
    assert tree_files(target.path) == before
    assert git(target.path, "status", "--porcelain") == ""
    with pytest.raises(WorkspaceError, match="empty patch"):
        target.apply_patch("")


def test_conflicting_three_way_merge_is_rolled_back_before_fuzz(origin, tmp_path):
    ws = GitWorkspace.clone(origin, tmp_path / "ws")
    (ws.path / "lines.txt").write_text(LINES.replace("line 15\n", "line fifteen\n"))
    patch = ws.extract_patch().text
    (origin / "lines.txt").write_text(LINES.replace("line 14\n", "line fourteen\n"))  # touches the hunk: conflict
    git(origin, "commit", "-qam", "upstream")
    target = GitWorkspace.clone(origin, tmp_path / "target")
    result = target.apply_patch(patch)
    assert [(a.method, a.ok) for a in result.attempts] == [
        ("git apply", False), ("git apply --3way", False), ("patch --fuzz=3", True)]
    assert "with conflicts" in result.attempts[1].output
    text = (target.path / "lines.txt").read_text()
    assert "<<<<<<<" not in text and "line fourteen\nline fifteen\n" in text
    assert git(target.path, "ls-files", "-u") == ""  # no unmerged index entries left behind
