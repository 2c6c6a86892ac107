"""Workspace.resolve as an attacker would probe it: sibling folders sharing the root's name as a prefix,
symlinked roots, links that leave the root, and /testbed paths that climb out.

A prefix check on strings (``str(real).startswith(str(root))``) would let ``../ws-evil`` through; these
tests fail under that mutation.
"""
import os

import pytest

from loopcoder.tools.workspace import ToolError, Workspace


@pytest.fixture
def layout(tmp_path):
    """tmp/ws (the workspace), tmp/ws-evil and tmp/wsx (siblings sharing its name as a prefix)."""
    ws = tmp_path / "ws"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "mod.py").write_text("x = 1\n")
    for sibling in ("ws-evil", "wsx"):
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "secret.txt").write_text("secret")
    return tmp_path


def refused(ws: Workspace, path: str, must_exist: bool = True) -> bool:
    try:
        ws.resolve(path, must_exist=must_exist)
    except ToolError as exc:
        assert "outside the workspace" in str(exc), str(exc)
        return True
    return False


SIBLING_PATHS = ["../ws-evil/secret.txt", "../wsx/secret.txt", "pkg/../../ws-evil/secret.txt",
                 "/testbed/../ws-evil/secret.txt", "/testbed/pkg/../../wsx/secret.txt", "../ws-evil"]


def test_a_sibling_folder_whose_name_starts_with_the_roots_is_outside(layout):
    ws = Workspace(layout / "ws")
    for path in SIBLING_PATHS + [str(layout / "ws-evil" / "secret.txt"), str(layout / "wsx")]:
        assert refused(ws, path), path
        assert refused(ws, path, must_exist=False), path
    assert refused(ws, "../ws-evil/new.py", must_exist=False)  # a file create would make there


def test_a_symlink_inside_to_a_prefix_sibling_is_outside(layout):
    root = layout / "ws"
    os.symlink(layout / "ws-evil", root / "evil_dir")
    os.symlink(layout / "wsx" / "secret.txt", root / "evil_file")
    os.symlink("../ws-evil", root / "pkg" / "rel_evil")  # relative target: ws/pkg/../ws-evil = ws/ws-evil
    os.symlink("../../ws-evil", root / "pkg" / "rel_out")
    ws = Workspace(root)
    for path in ["evil_dir", "evil_dir/secret.txt", "evil_file", "/testbed/evil_dir/secret.txt",
                 "pkg/rel_out/secret.txt", "evil_dir/new.py"]:
        assert refused(ws, path, must_exist=False), path
    # ws/pkg/../ws-evil is ws/ws-evil, which does not exist: inside, just missing
    assert ws.resolve("pkg/rel_evil", must_exist=False) == root / "ws-evil"


def test_a_workspace_given_through_a_symlink_confines_to_the_real_folder(layout):
    link = layout / "ws-link"
    os.symlink(layout / "ws", link)
    ws = Workspace(link)
    assert ws.root == (layout / "ws").resolve()
    real = layout / "ws" / "pkg" / "mod.py"
    assert ws.resolve("pkg/mod.py") == real
    assert ws.resolve(str(link / "pkg" / "mod.py")) == real  # the root's own link name is still inside
    assert ws.resolve("/testbed/pkg/mod.py") == real
    assert ws.rel(ws.resolve(str(link / "pkg"))) == "pkg"
    os.symlink(layout / "ws-evil", layout / "ws" / "out")
    for path in SIBLING_PATHS + ["out/secret.txt", str(link / "out" / "secret.txt"),
                                 str(link) + "-evil/secret.txt", str(link / ".." / "ws-evil")]:
        assert refused(ws, path, must_exist=False), path


def test_a_symlinked_root_whose_link_name_prefixes_a_sibling(tmp_path):
    # The real root is tmp/real/ws; the caller passes tmp/ws (a link). tmp/ws-evil sits next to the link.
    (tmp_path / "real" / "ws").mkdir(parents=True)
    (tmp_path / "ws-evil").mkdir()
    (tmp_path / "ws-evil" / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "real" / "ws", tmp_path / "ws")
    (tmp_path / "real" / "ws-evil").mkdir()  # and a sibling of the real root
    ws = Workspace(tmp_path / "ws")
    for path in [str(tmp_path / "ws-evil" / "secret.txt"), "../ws-evil", "/testbed/../ws-evil/x",
                 str(tmp_path / "real" / "ws-evil")]:
        assert refused(ws, path, must_exist=False), path


def test_testbed_is_a_whole_path_component(layout):
    ws = Workspace(layout / "ws")
    assert ws.resolve("/testbed") == ws.root and ws.resolve("/testbed/") == ws.root
    # /testbed-evil and /testbedx are not the sandbox's /testbed: host paths, outside the workspace
    for path in ["/testbed-evil/secret.txt", "/testbedx", "/testbed../ws-evil"]:
        assert refused(ws, path, must_exist=False), path


def test_tools_refuse_prefix_siblings_and_leave_them_untouched(make_toolbox, tmp_path):
    tb = make_toolbox({"a.py": "x = 1\n"})
    evil = tmp_path / "ws-evil"
    evil.mkdir()
    (evil / "secret.txt").write_text("secret")
    os.symlink(evil, tb.workspace.root / "evil_dir")
    for tool, args in [("view", {"path": "../ws-evil/secret.txt"}),
                       ("str_replace", {"path": "/testbed/../ws-evil/secret.txt", "old_str": "secret",
                                        "new_str": "owned"}),
                       ("create", {"path": "../ws-evil/new.py", "content": "x = 1\n"}),
                       ("create", {"path": "evil_dir/new.py", "content": "x = 1\n"}),
                       ("insert", {"path": "evil_dir/secret.txt", "line": 0, "text": "owned"})]:
        res = tb.registry.call(tool, args)
        assert not res.ok and "outside the workspace" in res.output, (tool, res.output)
    assert sorted(p.name for p in evil.iterdir()) == ["secret.txt"]
    assert (evil / "secret.txt").read_text() == "secret"
