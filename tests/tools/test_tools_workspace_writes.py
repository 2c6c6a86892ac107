"""Host-side reads and writes of workspace files: what the sandbox can do to the tree must not steer them.

The sandbox writes the same tree while the tools run on the host (possibly as root): a folder swapped for a
symlink after ``resolve``, a FIFO where a file was, and files the tools create must stay usable by the
sandbox user.
"""
import os
import threading

import pytest

from loopcoder.tools.search import TextSearch
from loopcoder.tools.workspace import ToolError, Workspace

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")


def finishes(fn, seconds: float = 10.0):
    """Run ``fn`` in a thread; its result, or a failure if it is still blocked after ``seconds``."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test thread below
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still blocked after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_fifo_in_the_workspace_is_refused_not_waited_on(make_toolbox):
    tb = make_toolbox({"a.py": "x = 1\n"})
    os.mkfifo(tb.workspace.root / "pipe.py")
    for tool, args in [("view", {"path": "pipe.py"}), ("outline", {"path": "pipe.py"}),
                       ("str_replace", {"path": "pipe.py", "old_str": "a", "new_str": "b"}),
                       ("insert", {"path": "pipe.py", "line": 0, "text": "x"}),
                       ("create", {"path": "pipe.py", "content": "x = 2\n", "overwrite": True})]:
        res = finishes(lambda: tb.registry.call(tool, args))
        assert not res.ok and ("FIFO" in res.output or "not a regular file" in res.output), (tool, res.output)
    ws = tb.workspace
    with pytest.raises(ToolError, match="FIFO"):
        finishes(lambda: ws.write_file(ws.resolve("pipe.py"), b"x"))


def test_a_folder_swapped_for_a_symlink_after_resolve_is_not_followed(tmp_path):
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "mod.py").write_text("secret\n")
    ws = Workspace(root)
    target, new_file, new_dir_file = (ws.resolve("pkg/mod.py"), ws.resolve("pkg/new.py", must_exist=False),
                                      ws.resolve("pkg/sub/new.py", must_exist=False))
    # the sandbox replaces pkg with a link to a host folder between the check and the write
    os.rename(root / "pkg", root / "pkg-moved")
    os.symlink(outside, root / "pkg")
    for path in (target, new_file, new_dir_file):
        with pytest.raises(ToolError, match="symlink"):
            ws.write_file(path, b"owned\n")
    with pytest.raises(ToolError, match="symlink"):
        ws.open_file(target)
    with pytest.raises(ToolError, match="symlink"):
        ws.remove_file(target)
    assert sorted(p.name for p in outside.iterdir()) == ["mod.py"]
    assert (outside / "mod.py").read_text() == "secret\n"
    # and a file swapped for a symlink is not written through either
    (root / "pkg-moved" / "link.py").symlink_to(outside / "mod.py")
    with pytest.raises(ToolError, match="symlink"):
        ws.write_file(root / "pkg-moved" / "link.py", b"owned\n")
    assert (outside / "mod.py").read_text() == "secret\n"


def test_remove_file_deletes_a_file_and_ignores_a_missing_one(tmp_path):
    ws = Workspace(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    ws.remove_file(ws.resolve("a.txt"))
    assert not (tmp_path / "a.txt").exists()
    ws.remove_file(ws.resolve("a.txt", must_exist=False))
    ws.remove_file(ws.resolve("gone/a.txt", must_exist=False))
    (tmp_path / "d").mkdir()
    with pytest.raises(ToolError, match="directory"):
        ws.remove_file(ws.resolve("d"))


@as_root
def test_files_and_folders_the_tools_create_belong_to_the_workspace_owner(make_toolbox):
    tb = make_toolbox({"a.py": "x = 1\n"})
    root = tb.workspace.root
    for p in [root, root / "a.py"]:
        os.lchown(p, 4321, 4322)
    call = tb.registry.call
    assert call("create", {"path": "pkg/sub/new.py", "content": "y = 2\n"}).ok
    assert call("str_replace", {"path": "a.py", "old_str": "x = 1", "new_str": "x = 3"}).ok
    for rel in ["pkg", "pkg/sub", "pkg/sub/new.py", "a.py"]:
        st = os.lstat(root / rel)
        assert (st.st_uid, st.st_gid) == (4321, 4322), rel
    # undo of a create removes the file; redo by create, delete it by hand, undo restores it: still theirs
    assert call("create", {"path": "pkg/sub/new.py", "content": "y = 5\n", "overwrite": True}).ok
    (root / "pkg" / "sub" / "new.py").unlink()
    os.rmdir(root / "pkg" / "sub")
    assert call("undo", {"path": "pkg/sub/new.py"}).ok
    for rel in ["pkg/sub", "pkg/sub/new.py"]:
        st = os.lstat(root / rel)
        assert (st.st_uid, st.st_gid) == (4321, 4322), rel
    assert (root / "pkg" / "sub" / "new.py").read_text() == "y = 2\n"


@as_root
def test_a_root_owned_workspace_keeps_root_owned_files(make_toolbox):
    tb = make_toolbox({})
    assert tb.registry.call("create", {"path": "d/new.py", "content": "y = 2\n"}).ok
    for rel in ["d", "d/new.py"]:
        st = os.lstat(tb.workspace.root / rel)
        assert (st.st_uid, st.st_gid) == (0, 0)


def test_python_search_numbers_lines_as_view_does(make_toolbox):
    tb = make_toolbox({"ff.py": "a = 1\n\x0c\nneedle = 2\n", "cr.txt": "x\r\nneedle\r\n"})
    hits = TextSearch(tb.workspace, backend="never").search("needle", False, None, ".", 50, False).hits
    assert [(h.path, h.line, h.text) for h in hits] == [("cr.txt", 2, "needle"), ("ff.py", 3, "needle = 2")]
