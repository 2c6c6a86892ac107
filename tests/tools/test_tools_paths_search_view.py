"""Path confinement, binary/huge file handling, search on both backends, and view."""
import os
import shutil
import subprocess

import pytest

from loopcoder.tools.config import ToolsConfig
from loopcoder.tools.search import TextSearch
from loopcoder.tools.workspace import ToolError, Workspace

FILES = {
    "a.py": "import os\n\ndef alpha():\n    return 'needle'\n",
    "a/x.py": "NEEDLE = 1\nneedle = NEEDLE\n",
    "b/deep/c.js": "// needle here\nfunction beta() { return 'needle'; }\n",
    "docs/readme.md": "The needle is in the docs.\n",
    "long.txt": "needle " + "x" * 5000 + "\n",
    ".hidden/secret.py": "needle = 'hidden'\n",
    "node_modules/lib/index.js": "needle\n",
}


@pytest.fixture
def ws_files(make_toolbox):
    tb = make_toolbox(FILES)
    (tb.workspace.root / "blob.bin").write_bytes(b"needle\x00\x01\x02" * 10)
    return tb


def test_paths_outside_the_workspace_are_refused(ws_files, tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    root = ws_files.workspace.root
    os.symlink(tmp_path / "outside.txt", root / "link_out")
    os.symlink(root / "a.py", root / "link_in.py")
    for bad in ["../outside.txt", "/etc/passwd", "link_out", "a/../../outside.txt", str(tmp_path / "outside.txt")]:
        res = ws_files.registry.call("view", {"path": bad})
        assert not res.ok and "outside the workspace" in res.output, (bad, res.output)
    for tool, args in [("create", {"path": "../evil.py", "content": "x"}),
                       ("str_replace", {"path": "link_out", "old_str": "secret", "new_str": "x"}),
                       ("search", {"pattern": "x", "path": "../"}),
                       ("outline", {"path": "/tmp"})]:
        res = ws_files.registry.call(tool, args)
        assert not res.ok and "outside the workspace" in res.output, (tool, res.output)
    assert (tmp_path / "outside.txt").read_text() == "secret"
    assert ws_files.registry.call("view", {"path": "link_in.py"}).ok  # a symlink that stays inside is fine


def test_sandbox_paths_under_testbed_map_to_the_workspace(ws_files):
    res = ws_files.registry.call("view", {"path": "/testbed/a.py"})
    assert res.ok and "def alpha" in res.output
    assert not ws_files.registry.call("view", {"path": "/testbed/../etc/passwd"}).ok


def test_view_numbers_lines_and_clips_long_lines(ws_files):
    res = ws_files.registry.call("view", {"path": "a.py", "start": 3, "end": 4})
    assert res.output.splitlines()[1:] == ["     3│def alpha():", "     4│    return 'needle'"]
    long = ws_files.registry.call("view", {"path": "long.txt"}).output
    assert "more chars]" in long and len(long) < 1000


def test_view_errors_for_bad_ranges_binary_and_missing_files(ws_files):
    call = ws_files.registry.call
    assert "past the end" in call("view", {"path": "a.py", "start": 99}).output
    assert "before start" in call("view", {"path": "a.py", "start": 3, "end": 2}).output
    assert "binary file" in call("view", {"path": "blob.bin"}).output
    assert "no such file" in call("view", {"path": "nope.py"}).output


def test_view_of_a_huge_file_is_a_window_never_the_whole_file(make_toolbox):
    config = ToolsConfig()
    config.limits.max_file_bytes = 1000
    config.limits.max_view_lines = 20
    tb = make_toolbox({"big.py": "".join(f"x_{i} = {i}\n" for i in range(5000))}, config=config)
    res = tb.registry.call("view", {"path": "big.py"})
    assert res.ok and res.data.end == 20 and res.data.total_lines == 5000 and "next: start=21" in res.output
    res = tb.registry.call("view", {"path": "big.py", "start": 4000, "end": 4500})
    assert res.data.end == 4019 and "clipped to 20 lines" in res.output
    assert "too large" in tb.registry.call("outline", {"path": "big.py"}).output
    assert "too large" in tb.registry.call("str_replace", {"path": "big.py", "old_str": "x_1 ", "new_str": "y"}).output


def test_view_of_a_folder_lists_it(ws_files):
    res = ws_files.registry.call("view", {"path": "b"})
    assert res.ok and res.data.is_dir and res.data.text == "deep/"


def backends():
    return [pytest.param("never", id="python"),
            pytest.param("always", id="ripgrep", marks=pytest.mark.skipif(
                shutil.which("rg") is None, reason="ripgrep not installed (apt-get install ripgrep)"))]


@pytest.mark.parametrize("backend", backends())
def test_search_finds_text_in_source_files_only(ws_files, backend):
    s = TextSearch(ws_files.workspace, backend)
    hits = s.search("needle")
    assert [(h.path, h.line) for h in hits.hits] == [
        ("a/x.py", 2), ("a.py", 4), ("b/deep/c.js", 1), ("b/deep/c.js", 2), ("docs/readme.md", 1), ("long.txt", 1)]
    assert not hits.more  # no hidden folder, no node_modules, no binary blob
    assert hits.hits[-1].text.endswith("more chars]")


@pytest.mark.parametrize("backend", backends())
def test_search_regex_glob_path_case_and_cap(ws_files, backend):
    s = TextSearch(ws_files.workspace, backend)
    assert [h.path for h in s.search(r"def \w+\(", regex=True).hits] == ["a.py"]
    assert [h.path for h in s.search("needle", glob="*.js").hits] == ["b/deep/c.js", "b/deep/c.js"]
    assert [h.line for h in s.search("needle", path="a").hits] == [2]
    assert [h.line for h in s.search("NEEDLE", path="a/x.py").hits] == [1, 2]
    assert [h.line for h in s.search("NEEDLE", path="a/x.py", ignore_case=False).hits] == [1, 2]
    assert len(s.search("needle", ignore_case=True).hits) == 7
    capped = s.search("needle", max_results=2)
    assert len(capped.hits) == 2 and capped.more
    assert s.search("needle(", regex=False).hits == []  # fixed string: "(" is literal
    with pytest.raises(ToolError, match="(?i)regex|parse"):
        s.search("needle(", regex=True)


@pytest.mark.parametrize("backend", backends())
def test_both_backends_find_files_containing_a_word(ws_files, backend):
    s = TextSearch(ws_files.workspace, backend)
    assert s.files_containing("NEEDLE", ["a.py", "a/x.py", "b/deep/c.js"]) == ["a/x.py"]
    assert s.files_containing("alpha", ["a.py", "a/x.py"]) == ["a.py"]


def test_search_tool_reports_backend_and_groups_by_file(ws_files):
    res = ws_files.registry.call("search", {"pattern": "needle", "glob": "*.py"})
    assert res.ok and res.data.backend in ("ripgrep", "python")
    assert res.output.splitlines()[1:] == ["a/x.py", "     2│needle = NEEDLE", "a.py", "     4│    return 'needle'"]
    assert "no matches" in ws_files.registry.call("search", {"pattern": "zzzz_nothing"}).output


def test_git_checkout_listing_honours_gitignore(make_toolbox):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    tb = make_toolbox({"keep.py": "def kept(): pass\n", "build/gen.py": "def generated(): pass\n",
                       ".gitignore": "build/\n"})
    subprocess.run(["git", "init", "-q", str(tb.workspace.root)], check=True)
    assert [f.rel for f in tb.workspace.list_files()] == ["keep.py"]
    assert tb.registry.call("find_definition", {"symbol": "generated"}).data.locations == []


def test_workspace_root_must_be_a_directory(tmp_path):
    with pytest.raises(ToolError, match="not a directory"):
        Workspace(tmp_path / "missing")
