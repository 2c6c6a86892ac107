"""Workspace behaviour that mutation testing (mutmut on tools/workspace.py) showed no test pinned down:
exact error messages, limits at their edge, what the listing leaves out (skipped folders at any depth,
symlinks, files deleted but still indexed, undecodable names), and a broken ``.git`` written from inside."""
from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import time

import pytest

from loopcoder.tools.workspace import BINARY_SNIFF_BYTES, FileInfo, ToolError, Workspace, is_binary


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


def write(root, files: dict[str, str | bytes]):
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())


def rels(ws: Workspace) -> list[str]:
    return [f.rel for f in ws.list_files()]


# ------------------------------------------------------------------ resolve and its messages


def test_error_messages_are_exact(tmp_path):
    ws = Workspace(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "big.txt").write_bytes(b"x" * 11)
    (tmp_path / "bin.dat").write_bytes(b"a\x00b")
    small = Workspace(tmp_path, max_file_bytes=10)
    cases = [
        (lambda: Workspace(tmp_path / "big.txt"), f"workspace {tmp_path / 'big.txt'} is not a directory"),
        (lambda: ws.resolve("  "), "path is empty"),
        (lambda: ws.resolve("a\x00b"), "path contains a NUL byte"),
        (lambda: ws.resolve("../x"), f"path '../x' is outside the workspace ({ws.root}); use a path relative to it"),
        (lambda: ws.resolve("nope/x.py"), "no such file or directory: nope/x.py"),
        (lambda: ws.read_text(tmp_path / "d"), "d is a directory, not a file"),
        (lambda: ws.read_text(tmp_path / "d", what="module"), "d is a directory, not a module"),
        (lambda: small.read_text(tmp_path / "big.txt"),
         "big.txt is too large to show whole (11 bytes, limit 10); view a line range or search it instead"),
        (lambda: ws.read_text(tmp_path / "bin.dat"), "bin.dat is a binary file (3 bytes); not shown"),
    ]
    for call, message in cases:
        with pytest.raises(ToolError) as err:
            call()
        assert str(err.value) == message


def test_absolute_host_path_inside_the_workspace_resolves(tmp_path):
    """Only /testbed paths are mapped; an absolute path already inside the root is taken as it is."""
    write(tmp_path, {"pkg/a.py": "x = 1\n"})
    ws = Workspace(tmp_path)
    assert ws.resolve(str(tmp_path / "pkg" / "a.py")) == (tmp_path / "pkg" / "a.py").resolve()
    assert ws.resolve("/testbed/pkg/a.py") == (tmp_path / "pkg" / "a.py").resolve()
    assert ws.resolve("/testbed") == ws.root


# ------------------------------------------------------------------ reading: limits at their edge


def test_size_limit_is_inclusive_and_defaults_to_one_million_bytes(tmp_path):
    write(tmp_path, {"at.txt": b"a" * 1_000_000, "over.txt": b"a" * 1_000_001})
    ws = Workspace(tmp_path)
    assert ws.max_file_bytes == 1_000_000
    assert len(ws.read_text(tmp_path / "at.txt")) == 1_000_000
    with pytest.raises(ToolError, match="too large"):
        ws.read_text(tmp_path / "over.txt")


def test_binary_sniff_looks_at_exactly_the_first_8_kib():
    assert BINARY_SNIFF_BYTES == 8192
    assert is_binary(b"a" * 8191 + b"\x00")
    assert not is_binary(b"a" * 8192 + b"\x00")
    assert not is_binary(b"")


def test_invalid_utf8_text_is_read_with_replacement_characters(tmp_path):
    write(tmp_path, {"latin1.txt": b"caf\xe9\n"})
    assert Workspace(tmp_path).read_text(tmp_path / "latin1.txt") == "caf\ufffd\n"


def test_file_info_is_immutable():
    info = FileInfo("a.py", 1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.size = 3  # type: ignore[misc]


# ------------------------------------------------------------------ listing


SKIPPED = {"__pycache__/m.pyc": "x", "node_modules/p/index.js": "x", "venv/lib/site.py": "x",
           "target/debug/out.txt": "x", "vendor-cache/v.go": "x", "sub/node_modules/deep.js": "x",
           "sub/__pycache__/deep.pyc": "x", ".hidden/h.py": "x", "src/.cache/c.py": "x", ".env": "x"}


def test_walk_skips_dependency_and_cache_folders_at_any_depth(tmp_path):
    write(tmp_path, {"keep.py": "x", "sub/keep2.py": "x", **SKIPPED})
    assert rels(Workspace(tmp_path)) == ["keep.py", "sub/keep2.py"]


def test_git_listing_skips_the_same_folders_even_when_tracked(tmp_path):
    write(tmp_path, {"keep.py": "x", "sub/keep2.py": "x", **SKIPPED})
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-f", ".")
    git(tmp_path, "commit", "-qm", "all")
    assert rels(Workspace(tmp_path)) == ["keep.py", "sub/keep2.py"]


def test_walk_does_not_follow_symlinks(tmp_path):
    outside = tmp_path / "outside"
    write(outside, {"secret.txt": "s"})
    root = tmp_path / "ws"
    write(root, {"a.py": "x"})
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "linked_file.txt").symlink_to(outside / "secret.txt")
    assert rels(Workspace(root)) == ["a.py"]


def test_git_listing_leaves_out_symlinks_and_files_deleted_from_disk(tmp_path):
    outside = tmp_path / "outside"
    write(outside, {"secret.txt": "s"})
    root = tmp_path / "ws"
    write(root, {"a.py": "x", "b.py": "x", "c.py": "x"})
    (root / "b_link.py").symlink_to(root / "a.py")
    (root / "b_out.txt").symlink_to(outside / "secret.txt")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "files")
    (root / "b.py").unlink()  # still in the index; files sorted after it must still be listed
    assert rels(Workspace(root)) == ["a.py", "c.py"]


class _DeletesAfterListing(Workspace):
    """A file removed between git's listing and the stat of each listed name (an agent's command running
    meanwhile): the real listing, then the file is deleted before list_files looks at it."""

    def __init__(self, root, victim):
        super().__init__(root)
        self.victim = victim

    def _git_files(self):
        self.listed = super()._git_files()
        (self.root / self.victim).unlink()
        return self.listed


def test_git_listing_goes_on_past_a_file_deleted_after_the_listing(tmp_path):
    write(tmp_path, {"a.py": "x", "b.py": "x", "c.py": "x"})
    git(tmp_path, "init", "-q")
    ws = _DeletesAfterListing(tmp_path, "b.py")
    assert rels(ws) == ["a.py", "c.py"]
    assert ws.listed == ["a.py", "b.py", "c.py"]  # the names came from git, the deleted one included


def test_git_listing_keeps_names_that_are_not_utf8(tmp_path):
    write(tmp_path, {"a.py": "x"})
    (tmp_path / os.fsdecode(b"caf\xe9.py")).write_text("y")
    git(tmp_path, "init", "-q")
    git(tmp_path, "-c", "core.quotepath=false", "add", ".")
    listed = rels(Workspace(tmp_path))
    assert listed[0] == "a.py" and os.fsencode(listed[1]) == b"caf\xe9.py"


@pytest.mark.parametrize("broken", ["empty-dir", "garbage-file"])
def test_broken_git_dir_falls_back_to_walking(tmp_path, broken):
    """A .git written from inside the sandbox can be anything: git fails, the listing walks instead."""
    write(tmp_path, {"a.py": "x", "node_modules/n.js": "x"})
    if broken == "empty-dir":
        (tmp_path / ".git").mkdir()
    else:
        (tmp_path / ".git").write_text("gitdir: /nonexistent/repo\n")
    assert rels(Workspace(tmp_path)) == ["a.py"]


# ------------------------------------------------------------------ host-side reads, writes and removes


def test_reads_and_removes_under_a_missing_folder_create_nothing(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(ToolError) as err:
        ws.open_file(ws.resolve("gone/x.py", must_exist=False))
    assert str(err.value) == "no such file or directory: gone/x.py"
    ws.remove_file(ws.resolve("gone2/x.py", must_exist=False))
    assert os.listdir(tmp_path) == []


def test_write_file_modes_contents_and_messages(tmp_path):
    ws = Workspace(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert ws.write_file(ws.resolve("new.py", must_exist=False), b"abc") is True
    assert stat.S_IMODE(os.stat(tmp_path / "new.py").st_mode) == 0o666 & ~umask
    assert ws.write_file(ws.resolve("new.py"), b"") is False
    assert (tmp_path / "new.py").read_bytes() == b""  # truncated to nothing, not to one byte
    ws.write_file(ws.resolve("newdir/sub/x.py", must_exist=False), b"x")
    for folder in ("newdir", "newdir/sub"):  # made with 0o777 less the umask (root could write into 0o000)
        assert stat.S_IMODE(os.stat(tmp_path / folder).st_mode) == 0o777 & ~umask
    with pytest.raises(ToolError) as err:
        ws.write_file(tmp_path / "newdir", b"x")
    assert str(err.value) == "cannot write newdir: Is a directory"
    with pytest.raises(ToolError) as err:
        ws.open_file(tmp_path / "newdir")
    assert str(err.value) == "newdir is not a regular file (a directory); it cannot be read"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x")
    with pytest.raises(ToolError) as err:
        ws.write_file(tmp_path / "d" / "f.txt" / "x.py", b"x")
    assert str(err.value) == "cannot use d/f.txt as a folder: a part of the path is a file, not a folder"
    os.mkfifo(tmp_path / "pipe.py")  # no reader: opening it to write fails at once
    with pytest.raises(ToolError) as err:
        ws.write_file(tmp_path / "pipe.py", b"x")
    assert str(err.value) == "cannot write pipe.py: not a regular file (a FIFO or socket)"
    with pytest.raises(ToolError) as err:
        ws.open_file(tmp_path / "pipe.py")
    assert str(err.value) == "pipe.py is not a regular file (a FIFO); it cannot be read"
    for outside in (tmp_path, tmp_path.parent / "x.py"):  # never the root itself, never above it
        with pytest.raises(ToolError) as err:
            ws.write_file(outside, b"x")
        assert str(err.value) == f"{outside} is not a file inside the workspace"
    assert not (tmp_path.parent / "x.py").exists()


def test_write_file_moves_the_whole_second_mtime_forward(tmp_path):
    ws = Workspace(tmp_path)
    path = tmp_path / "same.py"
    # a same-size rewrite within the second of the last write: bumped to the next whole second
    while time.time() % 1 > 0.5:  # start early in a second, so the two writes share it
        time.sleep(0.05)
    path.write_bytes(b"aaaa")
    before = os.stat(path).st_mtime
    ws.write_file(path, b"bbbb")
    assert int(os.stat(path).st_mtime) == int(before) + 1
    # a rewrite of another size keeps the kernel's mtime (now), not the old mtime plus one second
    os.utime(path, (1_000_000_000, 1_000_000_000))
    ws.write_file(path, b"ccccc")
    assert os.stat(path).st_mtime > time.time() - 60


def test_remove_file_removes_a_symlink_to_a_folder_not_the_folder(tmp_path):
    ws = Workspace(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "d", target_is_directory=True)
    ws.remove_file(tmp_path / "link")
    assert not os.path.lexists(tmp_path / "link") and (tmp_path / "d" / "keep.txt").exists()
    with pytest.raises(ToolError) as err:
        ws.remove_file(ws.resolve("d"))
    assert str(err.value) == "d is a directory; not removed"


def test_a_file_swapped_for_a_symlink_is_not_read_through(tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    root = tmp_path / "ws"
    root.mkdir()
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    ws = Workspace(root)
    with pytest.raises(ToolError) as err:
        ws.open_file(root / "link.txt")  # as if resolve() had seen a file there
    assert str(err.value) == "cannot open link.txt: it is a symlink (changed after the path was checked?); not followed"
